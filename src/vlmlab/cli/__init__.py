"""The `vlmlab` command line: train, eval, score, export, import-llava, study, compare, report, analyze, attention,
bench, demo, pretrain-lm, pretrain-vision, backbones, tasks, data, verify. The parser and the error handling are
here; each command's body is in `vlmlab.cli.commands` (`compare_command`, `study_scale` for the newer ones)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from pydantic import ValidationError
from rich.markup import escape

from vlmlab import grants, io
from vlmlab.bounded import shorten
from vlmlab.cli import commands, compare_command, study_scale
from vlmlab.cli.commands import resolve_config_path, resolve_study_path  # noqa: F401 - public helpers
from vlmlab.errors import EXIT_CONFIG, EXIT_ENVIRONMENT, EXIT_MEMORY, UserError, printable, validation_error
from vlmlab.parts import load_builtin_parts
from vlmlab.progress import console


def _count(minimum: int):
    """An argparse type: an integer >= `minimum` (a count of items, a size), else argparse's one-line error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


POSITIVE, NON_NEGATIVE = _count(1), _count(0)


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage mistake reported like every other error: one line, exit 2."""

    def error(self, message: str):
        _error(f"{self.prog}: {message} (see {self.prog} --help)", EXIT_CONFIG)
        raise SystemExit(EXIT_CONFIG)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vlmlab", description="Controlled backbone studies of vision-language models.")
    parser.add_argument("--debug", action="store_true", help="show the traceback of any error (before the command)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a run from a YAML config (then evaluate it)")
    p.add_argument("config", help="config file, or the name of a built-in config (easy-vqa-tiny)")
    p.add_argument("--out", help="run directory (default runs/<name>)")
    p.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    p.add_argument("--no-eval", action="store_true", help="skip evaluation after training")
    p.set_defaults(func=commands.cmd_train)

    p = sub.add_parser("eval", help="evaluate a trained run; writes predictions.parquet and metrics.json")
    p.add_argument("run_dir")
    p.add_argument("--task", action="append", metavar="TASK[:SPLIT]", help="evaluate these instead of the config's")
    p.add_argument("--limit", type=POSITIVE, help="at most this many items per task (--task's, else data.eval's)")
    p.add_argument("--blind", action="store_true", help="replace every image by a constant (visual-reliance baseline)")
    p.add_argument(
        "--perturb", metavar="noise:SIGMA|shift:PX", help="perturb every image deterministically (stability)"
    )
    p.set_defaults(func=commands.cmd_eval)

    p = sub.add_parser(
        "score",
        help="score answers produced elsewhere (vlmlab answers, lmms-eval samples, VLMEvalKit tables) like `vlmlab eval`",
    )
    p.add_argument("task", metavar="TASK[:SPLIT]", help="task id (vlmlab tasks) and split (default test)")
    p.add_argument("file", nargs="?", metavar="FILE", help="the answers (or give --predictions)")
    p.add_argument("--path", help="the dataset's file or directory, for tasks over local files")
    p.add_argument(
        "--predictions", metavar="FILE", help='JSON lines {"item_id": ..., "prediction": ...[, "confidence": p]}'
    )
    p.add_argument(
        "--from",
        dest="answers_format",
        choices=["vlmlab", "lmms-eval", "vlmevalkit", "auto"],
        default="vlmlab",
        help="what FILE is: vlmlab answers (default), lmms-eval --log_samples JSONL, VLMEvalKit xlsx/tsv, or auto",
    )
    p.add_argument("--harness-task", metavar="NAME", help="lmms-eval task of the samples (default: from the file name)")
    p.add_argument("--index-map", metavar="CSV", help="two columns: the harness's doc_id/index, vlmlab's item_id")
    p.add_argument(
        "--docs", metavar="PATH", help="lmms-eval: the task's dataset rows (parquet file or shard dir, or JSONL)"
    )
    p.add_argument("--out", required=True, metavar="DIR", help="writes DIR/predictions.parquet and DIR/metrics.json")
    p.add_argument("--limit", type=POSITIVE, help="score only the first N items")
    frame = p.add_mutually_exclusive_group()
    frame.add_argument("--run", metavar="RUN_DIR", help="read box answers in this run's processed-image frame")
    frame.add_argument(
        "--image-size", type=POSITIVE, help="side of the processed image box answers refer to (default 64)"
    )
    p.add_argument(
        "--geometry", choices=["resize", "letterbox-square"], help="how that image was made (default resize)"
    )
    p.set_defaults(func=commands.cmd_score)

    p = sub.add_parser(
        "export", help="write a trained run in a standard format (hf-llava: LlavaForConditionalGeneration)"
    )
    p.add_argument("run_dir")
    p.add_argument("out", help="output directory (must not exist or be empty)")
    p.add_argument("--format", choices=["hf-llava"], default="hf-llava")
    p.set_defaults(func=commands.cmd_export)

    p = sub.add_parser("import-llava", help="make a LLaVA-format HF checkpoint a run dir (eval, attention, analyses)")
    p.add_argument("checkpoint", help="local dir of a LlavaForConditionalGeneration checkpoint (e.g. llava-1.5-7b-hf)")
    p.add_argument("out", help="run directory to create (must not exist or be empty)")
    p.add_argument(
        "--template",
        choices=["native", "vicuna", "llama3"],
        default="native",
        help="prompt format (default: the checkpoint's own chat template)",
    )
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    p.add_argument("--allow-pickle", action="store_true", help="load .bin weights (pickle) if there are no safetensors")
    p.add_argument(
        "--eval",
        action="append",
        metavar="TASK[:SPLIT][@PATH]",
        help="evaluation task written into the run's data.eval (repeatable), e.g. pope:test@/data/pope",
    )
    p.set_defaults(func=commands.cmd_import_llava)

    p = sub.add_parser("backbones", help="list every registered part id by kind")
    p.set_defaults(func=commands.cmd_backbones)

    p = sub.add_parser(
        "pretrain-lm", help="pretrain the tiny LLaMA ladder on the offline corpus (cached; prints bits/byte)"
    )
    p.add_argument(
        "ids",
        nargs="*",
        default=["llama1-tiny", "llama2-tiny", "llama3-tiny"],
        metavar="ID",
        help="rungs to build (default: the whole ladder)",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a backbone field for every rung, e.g. hidden_size=64 or pretrain.tokens=200000",
    )
    p.set_defaults(func=commands.cmd_pretrain_lm)

    p = sub.add_parser("pretrain-vision", help="matched vision pretraining of a study's towers (cached; prints top-1)")
    p.add_argument(
        "spec", nargs="?", default="demo-vision", help="study whose towers to pretrain (default demo-vision)"
    )
    p.add_argument("--out", help="the study directory its runs will use (default runs/<name>)")
    p.set_defaults(func=commands.cmd_pretrain_vision)

    p = sub.add_parser("tasks", help="list every task (YAML and built-in formats)")
    p.set_defaults(func=commands.cmd_tasks)

    p = sub.add_parser("study", help="run a controlled study: control check, train + evaluate every variant, combine")
    p.add_argument("spec", help="study YAML, or the name of a built-in study (demo, demo-quick)")
    p.add_argument("--out", help="study directory (default runs/<name>)")
    p.add_argument(
        "--only", action="append", metavar="VARIANT", help="run only this variant (repeatable; one cluster job each)"
    )
    p.add_argument("--check", action="store_true", help="resolve the variants and run the control check only")
    p.add_argument(
        "--jobs", type=POSITIVE, default=1, help="train the runs in N processes with the cores shared out (default 1)"
    )
    p.add_argument("--script", metavar="FILE", help="write a shell script with one job per variant, then stop")
    study_scale.add_arguments(p)  # --plan, --launcher slurm|local and their settings
    p.set_defaults(func=commands.cmd_study)

    p = sub.add_parser(
        "compare", help="compare two or more prediction sets (runs, score outputs, answer files): analyses + report"
    )
    p.add_argument(
        "sources",
        nargs="+",
        metavar="[NAME=]PATH[#TASK]",
        help="a run dir or `vlmlab score` output, or an answers file (vlmlab JSONL, lmms-eval samples, VLMEvalKit table)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="the comparison's directory (a study directory)")
    p.add_argument(
        "--task",
        action="append",
        metavar="TASK[:SPLIT][@PATH]",
        help="the task answers files are scored on (repeatable; then FILE#TASK names which)",
    )
    p.add_argument("--limit", type=POSITIVE, help="only the first N items of each --task")
    p.add_argument(
        "--from",
        dest="answers_format",
        choices=["vlmlab", "lmms-eval", "vlmevalkit", "auto"],
        default="auto",
        help="what the answers files are (default: told apart by their content)",
    )
    p.add_argument("--image-size", type=POSITIVE, help="side of the processed image box answers refer to")
    p.add_argument("--geometry", choices=["resize", "letterbox-square"], help="how that image was made")
    p.set_defaults(func=compare_command.cmd_compare)

    p = sub.add_parser("report", help="write report.html (self-contained) and report.md for a finished study")
    p.add_argument("study_dir")
    p.set_defaults(func=commands.cmd_report)

    p = sub.add_parser(
        "analyze", help="run analyses on a finished study: analysis/<id>.json + figures, refreshed report"
    )
    p.add_argument("study_dir")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--only", metavar="IDS", help="comma-separated analysis ids (default: the spec's analyses)")
    group.add_argument("--all", action="store_true", help="every registered analysis")
    p.set_defaults(func=commands.cmd_analyze)

    p = sub.add_parser(
        "attention", help="text→image attention share per LLM layer of a trained run, and its saturation layer"
    )
    p.add_argument("run_dir")
    p.add_argument(
        "--n-probe", type=POSITIVE, default=256, help="probe items from the run's evaluation tasks (default 256)"
    )
    p.add_argument(
        "--threshold", type=float, default=0.1, help="saturation: share below this from a layer on (default 0.1)"
    )
    p.add_argument("--batch-size", type=POSITIVE, default=16)
    p.set_defaults(func=commands.cmd_attention)

    p = sub.add_parser("bench", help="cost measurements on a trained run")
    benches = p.add_subparsers(dest="bench", required=True)
    b = benches.add_parser("routing", help="full vs FastV vs DPVR: prefill FLOPs (counted + analytic), latency, memory")
    b.add_argument("run_dir")
    b.add_argument("--fastv-layer", type=NON_NEGATIVE, default=2)
    b.add_argument("--fastv-ratio", type=float, default=0.5)
    b.add_argument("--dpvr-layer", type=NON_NEGATIVE, default=None, help="default: the run's own DPVR layer, else L/2")
    b.add_argument("--n-probe", type=POSITIVE, default=64, help="prompts in the timed batch (default 64)")
    b.add_argument("--eval-limit", type=NON_NEGATIVE, default=0, help="also evaluate each strategy on N items per task")
    b.set_defaults(func=commands.cmd_bench_routing)

    b = benches.add_parser(
        "vision", help="forward latency and activation memory of each vision tower as the image grows"
    )
    b.add_argument(
        "spec",
        nargs="?",
        default="demo-vision",
        help="study whose vision factor names the towers (default demo-vision)",
    )
    b.add_argument("--sizes", type=POSITIVE, nargs="+", default=[64, 128, 256, 512], metavar="PX")
    b.add_argument("--batch", type=POSITIVE, default=1, help="images per forward (default 1)")
    b.add_argument("--repeats", type=POSITIVE, default=3)
    b.add_argument("--out", default="runs/bench-vision", help="directory for vision_bench.json and .png")
    b.set_defaults(func=commands.cmd_bench_vision)

    p = sub.add_parser("demo", help="the main job: the built-in study of LLM generations on easy-VQA + shapes-world")
    p.add_argument("--quick", action="store_true", help="a smaller version for a first look (a few minutes)")
    p.add_argument(
        "--study",
        choices=["llm", "vision", "routing"],
        default="llm",
        help="llm: study A, LLM generations (default); vision: study B, ViT vs Vim vs VMamba; "
        "routing: study C, full vs FastV vs DPVR on the llm demo's gen3 model",
    )
    p.add_argument("--out", help="study directory (default runs/demo or runs/demo-quick)")
    p.add_argument(
        "--jobs", type=POSITIVE, default=1, help="train the runs in N processes with the cores shared out (default 1)"
    )
    p.set_defaults(func=commands.cmd_demo)

    p = sub.add_parser("data", help="generate a synthetic dataset, or check one before training on it")
    gens = p.add_subparsers(dest="generator", required=True)
    g = gens.add_parser("shapes-world", help="seeded multi-object shape scenes with VQA and grounding questions")
    g.add_argument("--seed", type=NON_NEGATIVE, required=True)
    g.add_argument("--n", type=POSITIVE, required=True, help="number of scenes")
    g.add_argument("--out", required=True, help="output directory (must not exist or be empty)")
    g.add_argument("--size", type=POSITIVE, default=64, help="image side in pixels (default 64)")
    g.add_argument(
        "--split-fractions",
        type=float,
        nargs=3,
        default=[0.8, 0.1, 0.1],
        metavar=("TRAIN", "VAL", "TEST"),
        help="fractions of scenes per split (default 0.8 0.1 0.1)",
    )
    g.set_defaults(func=commands.cmd_data_shapes_world)
    g = gens.add_parser("check", help="load a dataset and decode every image (a bad record or image: one line, exit 1)")
    g.add_argument("task", metavar="TASK[:SPLIT]", help="task id (vlmlab tasks) and split (default test)")
    g.add_argument("--path", help="the dataset's file or directory, for tasks over local files")
    g.add_argument("--limit", type=POSITIVE, help="check at most this many items")
    g.set_defaults(func=commands.cmd_data_check)
    g = gens.add_parser(
        "convert-refs", help="a refer-toolkit refs(unc).p pickle as refs.json (read safely, no code runs)"
    )
    g.add_argument("pickle", help="the refs(...).p file")
    g.add_argument("out", help="the JSON file to write (e.g. DIR/refs.json)")
    g.set_defaults(func=commands.cmd_data_convert_refs)

    p = sub.add_parser("verify", help="check a run's checkpoints against their sha256 manifests; print its digest")
    p.add_argument("run_dir")
    p.add_argument(
        "--write-manifest",
        action="store_true",
        help="give checkpoints written before manifests existed one (once, recorded in the run)",
    )
    p.set_defaults(func=commands.cmd_verify)
    _add_grant_flags(sub)
    return parser


GRANT_HELP = {  # the flags of vlmlab.grants: what only the person running vlmlab may allow, never a file
    "--trust-remote-code": "allow a checkpoint's own Python (asked by model.llm.trust_remote_code: true)",
    "--allow-pickle": "allow pickle weights (asked by an allow_pickle: true in the config)",
    "--allow-unverified": "use a checkpoint that has no manifest.json once; its outputs record it",
}
MODEL_COMMANDS = {"train", "eval", "export", "import-llava", "study", "analyze", "attention", "routing", "vision"}


def _add_grant_flags(sub) -> None:
    """The grant flags on every command that builds a model (`bench routing`, `bench vision` included)."""
    for name, p in sub.choices.items():
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                _add_grant_flags(action)
        if name in MODEL_COMMANDS or name == "pretrain-vision":
            for flag, text in GRANT_HELP.items():
                if flag not in p._option_string_actions:
                    p.add_argument(flag, action="store_true", help=text)


def _error(message: str, code: int) -> int:
    """Print `error: message` as one line (a control character or line break in user text is shown escaped, and
    a message grown past MAX_MESSAGE characters by user data is cut, saying how much was left out)."""
    message = shorten(printable(message), MAX_MESSAGE)
    console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)  # `[key]` is text
    return code


MAX_MESSAGE = 2000  # the longest built-in message (the memory pre-flight's) is about 600 characters


@contextmanager
def _allowed_and_confined(args) -> Iterator[None]:
    """The command runs with the grants its flags give, and writes nothing through a link under the directory it
    was given (a run, a study, an output directory)."""
    with ExitStack() as stack:
        stack.enter_context(grants.granted(*(name for name in grants.FLAGS if getattr(args, name, False))))
        for attr in ("run_dir", "study_dir", "out"):
            value = getattr(args, attr, None)
            if isinstance(value, str) and value:
                stack.enter_context(io.confined(value))
        yield


def main(argv: list[str] | None = None) -> int:
    """Run one command. Whatever a user or the machine can cause is one line and a non-zero exit code by cause
    (vlmlab.errors.EXIT_*); a traceback is shown only for bugs, or for everything with `--debug`."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage mistake (2, already reported)
        return exc.code if isinstance(exc.code, int) else EXIT_CONFIG
    try:
        load_builtin_parts()
        with _allowed_and_confined(args):
            return args.func(args)
    except KeyboardInterrupt:
        console.print("[red]interrupted[/red]")
        return 130
    except Exception as exc:
        if args.debug:
            raise
        if isinstance(exc, UserError):
            return _error(str(exc), exc.exit_code)
        if isinstance(exc, ValidationError):  # a command-line value checked by the schema
            return _error(str(validation_error(exc)), EXIT_CONFIG)
        if isinstance(exc, OSError):  # the machine: permission, a full disk, a vanished file
            where = f"{exc.filename}: " if exc.filename else ""
            return _error(f"{where}{exc.strerror or exc}", EXIT_ENVIRONMENT)
        if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
            return _error(
                f"out of memory ({exc}); lower train.batch_size, eval.batch_size or data.image.size", EXIT_MEMORY
            )
        raise
