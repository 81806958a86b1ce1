"""`vlmlab compare A B [C ...] --out DIR`: the study's analyses and report for prediction sets made anywhere, without
writing a study spec (the spec it writes, `DIR/compare.yaml`, reruns it with `vlmlab study`)."""

from __future__ import annotations

from pathlib import Path

from vlmlab.progress import console


def cmd_compare(args) -> int:
    from vlmlab import io
    from vlmlab.cli.commands import _print_study_summary
    from vlmlab.cli.pipeline import analyze_and_report
    from vlmlab.study.compare import compare_spec
    from vlmlab.study.runner import run_study

    out = Path(args.out)
    image = {k: v for k, v in {"size": args.image_size, "geometry": args.geometry}.items() if v is not None}
    spec = compare_spec(args.sources, args.task or [], out.name, args.answers_format, args.limit, image or None)
    spec_path = out / "compare.yaml"
    io.write_yaml(spec_path, spec)
    run_study(spec_path, out)  # score every prediction set (a named step each) and combine the records
    _, html_path = analyze_and_report(out)
    _print_study_summary(out)
    overlap = out / "analysis" / "overlap.json"
    if overlap.is_file():
        frame = io.read_json(overlap)["result"]["pairs"]["frame"]
        cols = frame["columns"]
        for row in frame["rows"]:
            r = dict(zip(cols, row))
            console.print(
                f"{r['b']} vs {r['a']}: {r['verdict']} (only {r['b']} {r['only_b']}, only {r['a']} {r['only_a']}, "
                f"both {r['both']}, neither {r['neither']}; McNemar p {r['mcnemar_p']:.3g})",
                highlight=False,
                soft_wrap=True,
            )
    console.print(f"\n[bold]Open {html_path}[/bold] (rerun: vlmlab study {spec_path} --out {out})", soft_wrap=True)
    return 0
