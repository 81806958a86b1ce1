"""Compare vlmlab's benchmark metrics with the official evaluators' own code, item by item, on randomized answers.

vlmlab ships none of the official code: give it local checkouts (git directories) of GT-Vision-Lab/VQA and
haotian-liu/LLaVA; the script reads the evaluators from them (VQA's vqaEval.py at the 2021, 2016 and 2015
commits, the last holding the tables VizWiz's API copies; LLaVA's m4c_evaluator.py), runs them on answers
drawn from the edge cases' vocabulary, and counts the items where vlmlab's score differs.

    python benchmarks/check_conformance.py --vqa-git PATH/VQA/.git --llava-git PATH/LLaVA/.git [--cases 3000]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import random
import re
import subprocess
import sys
import types

from vlmlab.metrics import textvqa_accuracy, vizwiz_accuracy, vqa_accuracy

WORDS = [
    "red",
    "Red",
    "red.",
    "the red",
    "a dog",
    "dog",
    "Dog!",
    "two",
    "2",
    "Two",
    "t-shirt",
    "t shirt",
    "yes",
    "Yes",
    "no",
    "No.",
    "1,000",
    "1000",
    "dont",
    "don't",
    "it's",
    "its",
    "3.5",
    "  red ",
    "red\n",
    "ma'am",
    "maam",
    "yes, it is",
    "(red)",
    "red?",
    "one",
    "none",
    "0",
    "im",
    "i'm",
    "oclock",
    "yall",
    "y'all",
    "couldnt",
    "ten",
    "Coca-Cola",
    "coca cola",
    "john's",
    "johns",
    "5:30",
    "unanswerable",
    "Unanswerable",
    "don’t",
    "x-ray",
]
VQA_FILE = "PythonEvaluationTools/vqaEvaluation/vqaEval.py"


def git_file(git_dir: str, commit: str, path: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", git_dir, "show", f"{commit}:{path}"], check=True, capture_output=True, text=True
    ).stdout


def module_from(source: str, name: str) -> types.ModuleType:
    """A module from Python source; Python 2 print statements become calls (the VQA code is Python 2)."""
    source = re.sub(r'print "(.*)"', r'print("\1")', source.replace("\t", "    "))
    module = types.ModuleType(name)
    exec(compile(source, name, "exec"), module.__dict__)
    return module


class _Dataset:
    def __init__(self, qa):
        self.qa = qa

    def getQuesIds(self):
        return list(self.qa)


def official_vqa(cls, prediction: str, humans: list[str]) -> float:
    gts = {
        1: {
            "answers": [{"answer": h, "answer_id": i + 1} for i, h in enumerate(humans)],
            "question_type": "q",
            "answer_type": "a",
        }
    }
    evaluator = cls(_Dataset(gts), _Dataset({1: {"answer": prediction}}))
    evaluator.updateProgress = lambda progress: None
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
    return evaluator.evalQA[1] / 100


def official_vizwiz(evaluator, prediction: str, humans: list[str]) -> float:
    """The VizWiz API's per-question loop (prediction processed with the 2015 tables, answers as given)."""
    answer = evaluator.processDigitArticle(
        evaluator.processPunctuation(prediction.replace("\n", " ").replace("\t", " ").strip())
    )
    scores = [min(1, len([h for j, h in enumerate(humans) if j != i and h == answer]) / 3) for i in range(len(humans))]
    return sum(scores) / len(scores)


def draw(rng: random.Random) -> tuple[str, list[str]]:
    pool = rng.sample(WORDS, rng.choice([1, 2, 3, 5]))
    return rng.choice(WORDS + pool), [rng.choice(pool) for _ in range(10)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vqa-git", required=True, help="git directory of GT-Vision-Lab/VQA")
    parser.add_argument("--llava-git", help="git directory of haotian-liu/LLaVA (TextVQA)")
    parser.add_argument("--cases", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    checks = []
    for commit, convention in (("a013f00", "official-2021"), ("458a8b2", "official-2016")):
        cls = module_from(git_file(args.vqa_git, commit, VQA_FILE), f"vqaEval_{commit}").VQAEval
        checks.append(
            (
                f"VQAv2 {convention} (vqaEval.py {commit})",
                lambda p, h, c=cls: official_vqa(c, p, h),
                lambda p, h, conv=convention: round(100 * vqa_accuracy(p, h, conv), 2) / 100,
            )
        )
    v2015 = module_from(git_file(args.vqa_git, "14a5e12", VQA_FILE), "vqaEval_14a5e12").VQAEval(
        _Dataset({}), _Dataset({})
    )
    checks.append(
        ("VizWiz (API loop, vqaEval.py 14a5e12 tables)", lambda p, h: official_vizwiz(v2015, p, h), vizwiz_accuracy)
    )
    if args.llava_git:
        sys.modules.setdefault("tqdm", types.SimpleNamespace(tqdm=lambda x: x))
        m4c = module_from(git_file(args.llava_git, "HEAD", "llava/eval/m4c_evaluator.py"), "m4c_evaluator")
        evaluator = m4c.TextVQAAccuracyEvaluator()
        checks.append(
            (
                "TextVQA (LLaVA m4c_evaluator.py)",
                lambda p, h: evaluator.eval_pred_list([{"pred_answer": p, "gt_answers": h}]),
                textvqa_accuracy,
            )
        )
    failed = 0
    for name, official, ours in checks:
        mismatches = []
        for _ in range(args.cases):
            prediction, humans = draw(rng)
            if abs(official(prediction, humans) - ours(prediction, humans)) > 1e-9:
                mismatches.append((prediction, humans))
        failed += len(mismatches)
        print(
            f"{name}: {args.cases} cases, {len(mismatches)} mismatches"
            + (f" (first: {mismatches[0]})" if mismatches else "")
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
