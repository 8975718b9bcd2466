"""The `percpu` command's entry (src/percpu/__main__.py): a Ctrl-C is never lost, whenever it comes."""

from __future__ import annotations

import subprocess
import sys

import percpu

# A KeyboardInterrupt raised inside a callback the interpreter calls from C (here a weakref callback, as
# importlib's module locks use at the end of every import), then then a wait.
_LOST_IN_A_CALLBACK = """
import sys, time, weakref
if sys.argv[1] == "hook":
    from percpu.__main__ import _redeliver_lost_interrupts
    sys.unraisablehook = _redeliver_lost_interrupts

class Thing:
    pass

def callback(ref):
    raise KeyboardInterrupt

thing = Thing()
ref = weakref.ref(thing, callback)
try:
    del thing
    time.sleep(3)  # a blocking wait, as a command's count is: the interrupt must end it
    print("lost")
except KeyboardInterrupt:
    print("delivered")
"""


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600)


def _run(mode: str) -> subprocess.CompletedProcess[str]:
    return _python(_LOST_IN_A_CALLBACK, mode)


def test_a_ctrl_c_raised_inside_a_callback_is_delivered_again() -> None:
    plain = _run("plain")  # what CPython does on its own: the interrupt is printed and lost
    assert plain.stdout == "lost\n" and "Exception ignored" in plain.stderr, plain
    hooked = _run("hook")
    assert hooked.stdout == "delivered\n" and hooked.stderr == "", hooked


def test_other_exceptions_in_callbacks_are_still_reported() -> None:
    code = _LOST_IN_A_CALLBACK.replace("raise KeyboardInterrupt", "raise ValueError('from the callback')")
    done = _python(code, "hook")
    assert done.stdout == "lost\n" and "ValueError: from the callback" in done.stderr, done


def test_the_command_installs_the_hook_before_importing_anything_slow() -> None:
    # The entry's own imports, and the package root's, are all that runs before the hook is in place: they
    # must not include numpy, libbpf's binding or the CLI.
    code = (
        "import sys, percpu.__main__ as entry; "
        "print(sorted(m for m in sys.modules if m.startswith(('percpu', 'numpy'))))"
    )
    done = _python(code)
    assert done.stdout.strip() == "['percpu', 'percpu.__main__', 'percpu._version']"


def test_the_package_root_still_gives_every_public_name_and_module() -> None:
    code = (
        "import percpu; "
        "names = [getattr(percpu, n) for n in percpu.__all__]; "
        "print(percpu.maps.PerCpuArray is percpu.PerCpuArray, "
        "percpu.errors.PercpuError is percpu.PercpuError, set(percpu.__all__) <= set(dir(percpu)))"
    )
    done = _python(code)
    assert done.stdout.split() == ["True", "True", "True"]
    # Each name is listed where it is found on first use, and nothing else is.
    assert set(percpu._PUBLIC) | {"__version__"} == set(percpu.__all__)
    missing = _python("import percpu; percpu.no_such_name")
    assert missing.returncode == 1 and "AttributeError: module 'percpu' has no attribute 'no_such_name'" in (
        missing.stderr
    )


# `percpu stat` whose Ctrl-C lands, as the one a user pressed can, in a callback run inside an import of
# main()'s (the first import of the stat command's module), where CPython cannot raise it.
_STAT_INTERRUPTED_IN_AN_IMPORT = """
import sys, weakref
import percpu.__main__ as entry

class Thing:
    pass

def callback(ref):
    raise KeyboardInterrupt

thing = [Thing()]
ref = weakref.ref(thing[0], callback)

class Finder:
    def find_spec(self, name, path=None, target=None):
        if name == "percpu.cli.stat" and thing:
            thing.clear()  # the callback runs here, inside the import
        return None

sys.meta_path.insert(0, Finder())
sys.argv = ["percpu", "stat", "-d", "30", "-f", "json"]
sys.exit(entry.main())
"""


def test_a_ctrl_c_lost_in_an_import_of_the_command_still_ends_it() -> None:
    done = _python(_STAT_INTERRUPTED_IN_AN_IMPORT)
    # 130: interrupted before counting; without the hook the import goes on, stat counts for 30 s (or,
    # without the privileges, says it cannot) and ends 0 or 1.
    assert done.returncode == 130 and done.stdout == "" and done.stderr == "", done
