"""Prints the image tests' build and run times at the end of the session (they are part of the result)."""

TIMINGS: list[tuple[str, float]] = []


def pytest_terminal_summary(terminalreporter):
    if TIMINGS:
        terminalreporter.section("image build and run times")
        for what, seconds in TIMINGS:
            terminalreporter.write_line(f"{what}: {seconds:.1f} s")
