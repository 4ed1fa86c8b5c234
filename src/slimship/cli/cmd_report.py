"""slimship report: the self-contained HTML report of a run folder."""

HELP = "write the run's report as one self-contained HTML file (plots, table, decision, per-layer bytes, recipe)"


def add_arguments(p) -> None:
    p.add_argument("dir", help="the --out folder of a finished `slimship run`")
    p.add_argument("--out", default=None, help="HTML file to write (default DIR/report.html)")


def run(args) -> int:
    from slimship.api.report import write_html_report

    print(f"wrote {write_html_report(args.dir, args.out)}")
    return 0
