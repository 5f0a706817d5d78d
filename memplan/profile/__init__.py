"""Input: machine profiles (TOML) and what belongs to them.

``reader`` reads one section per function (``table`` checks single values, ``layout`` builds
the memory blocks), ``population`` draws the seeded pages, ``bundled`` lists the shipped
profiles, ``writer`` writes a machine back as a profile.
"""
