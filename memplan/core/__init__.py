"""The small core every layer uses: the machine model, geometry, result types,
errors, units and exit statuses. It never prints and never imports click or rich."""
