"""The compatibility scenarios' checks: each printed as it is made, and the closing
"N passed, M failed" line that e2e/compat/run.sh adds up."""

passed, failed = 0, 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok    {name}")
    else:
        failed += 1
        print(f"FAIL  {name} {detail}")


def summary():
    """Print the closing line; the scenario's exit status."""
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1
