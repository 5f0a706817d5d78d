import os
import shutil

from conftest import PROFILES
from memplan.profile.bundled import bundled_profiles, profile_dirs


def test_checkout_profiles_have_descriptions():
    profiles = bundled_profiles()
    assert [p.name for p in profiles] == sorted(f[:-5] for f in os.listdir(PROFILES) if f.endswith(".toml"))
    assert all(p.description and os.path.isfile(p.path) for p in profiles)
    assert os.path.join(os.path.dirname(os.path.dirname(profile_dirs()[0])), "profiles") == profile_dirs()[1]


def test_installed_package_data_comes_first(tmp_path):
    installed = tmp_path / "memplan" / "profiles"
    installed.mkdir(parents=True)
    shutil.copy(os.path.join(PROFILES, "boot-vm.toml"), installed)
    (installed / "notes.txt").write_text("not a profile")
    found = bundled_profiles([str(installed), PROFILES])
    assert [p.name for p in found] == ["boot-vm"] and found[0].path == str(installed / "boot-vm.toml")
    assert bundled_profiles([str(tmp_path / "missing")]) == []
