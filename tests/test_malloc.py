"""The allocator decision, tested without exec'ing."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from timellm import _malloc
from timellm._malloc import TUNED_TUNABLES, allocator_setting, should_reexec, tuned_environment


def test_reexec_on_linux_glibc_without_tunables():
    assert should_reexec({}, "Linux", "glibc")
    assert should_reexec({"TIMELLM_MALLOC": "tuned"}, "Linux", "glibc")


@pytest.mark.parametrize(
    "environ,system,libc",
    [
        ({"GLIBC_TUNABLES": TUNED_TUNABLES}, "Linux", "glibc"),  # already re-executed
        ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, "Linux", "glibc"),  # the user's own
        ({"TIMELLM_MALLOC": "default"}, "Linux", "glibc"),  # opted out
        ({"TIMELLM_MALLOC": " Default "}, "Linux", "glibc"),
        ({}, "Darwin", ""),
        ({}, "Windows", ""),
        ({}, "Linux", ""),  # musl and others ignore GLIBC_TUNABLES
    ],
)
def test_no_reexec_when_set_opted_out_or_not_glibc(environ, system, libc):
    assert not should_reexec(environ, system, libc)


def test_the_setting_in_force_is_reported():
    assert allocator_setting({}) == "default"
    assert allocator_setting({"GLIBC_TUNABLES": TUNED_TUNABLES}) == "tuned"
    reordered = ":".join(reversed(TUNED_TUNABLES.split(":")))
    assert allocator_setting({"GLIBC_TUNABLES": reordered + ":glibc.malloc.arena_max=2"}) == "tuned"
    assert allocator_setting({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}) == "custom"


def test_tuned_environment_keeps_the_rest():
    env = tuned_environment({"PATH": "/bin", "GLIBC_TUNABLES": "x"})
    assert env == {"PATH": "/bin", "GLIBC_TUNABLES": TUNED_TUNABLES}


def test_ensure_execs_the_same_command_only_when_needed(monkeypatch):
    calls = []
    monkeypatch.setattr(_malloc.os, "execve", lambda *args: calls.append(args))
    monkeypatch.setattr(_malloc, "should_reexec", lambda: False)
    _malloc.ensure_tuned_allocator(["-m", "timellm.experiments.speed"])
    assert calls == []
    monkeypatch.setattr(_malloc, "should_reexec", lambda: True)
    _malloc.ensure_tuned_allocator(["-m", "timellm.experiments.speed", "--steps", "2"])
    ((path, argv, env),) = calls
    assert path == sys.executable and argv == [
        sys.executable,
        "-m",
        "timellm.experiments.speed",
        "--steps",
        "2",
    ]
    assert env["GLIBC_TUNABLES"] == TUNED_TUNABLES


@pytest.mark.slow
@pytest.mark.skipif(not should_reexec({}), reason="needs Linux with glibc")
def test_a_real_reexec_sets_the_variable_before_python_starts():
    code = (
        "import os, sys; from timellm._malloc import ensure_tuned_allocator, allocator_setting;"
        "ensure_tuned_allocator(); print(allocator_setting())"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "TIMELLM_MALLOC")}
    env["PYTHONPATH"] = str(Path(_malloc.__file__).parents[1])
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "tuned"
    env["TIMELLM_MALLOC"] = "default"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "default"
