"""VQA answer processing and the accuracies built on it: VQA accuracy (VQAv2), VizWiz's, TextVQA's, GQA exact match.

The answer processing follows GT-Vision-Lab/VQA `PythonEvaluationTools/vqaEvaluation/vqaEval.py`
(`processPunctuation`, then `processDigitArticle`), with its punctuation list, number words, articles and
contraction table, including two quirks that decide scores item by item: the period rule drops a '.' that
no digit follows (its look-behind is written as a look-ahead), and at most 32 periods go (`re.UNICODE` is
passed where `sub` takes its count).
"""

from __future__ import annotations

import re

PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
NUMBER_WORDS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
ARTICLES = frozenset({"a", "an", "the"})
_DIGIT_COMMA_DIGIT = re.compile(r"(\d)(,)(\d)")
_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")
_PERIODS_DROPPED = 32


def _pairs(table: str) -> dict[str, str]:
    words = table.split()
    return dict(zip(words[::2], words[1::2]))


# word -> its spelling in the official table (the entries whose key has a capital letter never match: words
# are lower-cased first, so they are left out)
CONTRACTIONS = _pairs("""
    'ow'sat 'ow's'at   'ows'at 'ow's'at   aint ain't   arent aren't
    cant can't   couldn'tve couldn't've   couldnt couldn't   couldnt've couldn't've
    couldve could've   didnt didn't   doesnt doesn't   dont don't
    hadn'tve hadn't've   hadnt hadn't   hadnt've hadn't've   hasnt hasn't
    havent haven't   he'dve he'd've   hed he'd   hed've he'd've
    hes he's   howd how'd   howll how'll   hows how's
    isnt isn't   it'dve it'd've   itd it'd   itd've it'd've
    itll it'll   let's let's   maam ma'am   mightn'tve mightn't've
    mightnt mightn't   mightnt've mightn't've   mightve might've   mustnt mustn't
    mustve must've   neednt needn't   notve not've   oclock o'clock
    oughtnt oughtn't   ow's'at 'ow's'at   shant shan't   she'dve she'd've
    she's she's   shed've she'd've   shouldn'tve shouldn't've   shouldnt shouldn't
    shouldnt've shouldn't've   shouldve should've   somebody'd somebodyd   somebody'dve somebody'd've
    somebodyd've somebody'd've   somebodyll somebody'll   somebodys somebody's   someone'dve someone'd've
    someoned someone'd   someoned've someone'd've   someonell someone'll   someones someone's
    something'dve something'd've   somethingd something'd   somethingd've something'd've   somethingll something'll
    thats that's   there'dve there'd've   thered there'd   thered've there'd've
    therere there're   theres there's   they'dve they'd've   theyd they'd
    theyd've they'd've   theyll they'll   theyre they're   theyve they've
    twas 'twas   wasnt wasn't   we'dve we'd've   wed've we'd've
    werent weren't   weve we've   whatll what'll   whatre what're
    whats what's   whatve what've   whens when's   whered where'd
    wheres where's   whereve where've   who'dve who'd've   whod who'd
    whod've who'd've   wholl who'll   whos who's   whove who've
    whyll why'll   whyre why're   whys why's   wont won't
    wouldn'tve wouldn't've   wouldnt wouldn't   wouldnt've wouldn't've   wouldve would've
    y'all'dve y'all'd've   y'alld've y'all'd've   y'allll y'all'll   yall y'all
    yall'd've y'all'd've   yall'll y'all'll   you'dve you'd've   youd you'd
    youd've you'd've   youll you'll   youre you're   youve you've
""")


# VizWiz's evaluation API (Qing Li's vqaEval.py, vizwiz.org) forked vqaEval.py before its 2016 apostrophe fix:
# its contraction table is vqaEval.py's at commit 14a5e12 (2015-09-30), most values spelled with U+2019
VIZWIZ_CONTRACTIONS = _pairs("""
    aint ain't   arent aren't   cant can't   couldn'tve couldn’t’ve
    couldnt couldn't   couldnt’ve couldn’t’ve   couldve could've   didnt didn’t
    doesnt doesn’t   dont don’t   hadn'tve hadn’t’ve   hadnt hadn’t
    hadnt’ve hadn’t’ve   hasnt hasn’t   havent haven’t   hed he’d
    hed’ve he’d’ve   hes he’s   he’dve he’d’ve   howd how’d
    howll how’ll   hows how’s   isnt isn’t   itd it’d
    itd’ve it’d’ve   itll it’ll   it’dve it’d’ve   let’s let’s
    maam ma’am   mightnt mightn’t   mightnt’ve mightn’t’ve   mightn’tve mightn’t’ve
    mightve might’ve   mustnt mustn’t   mustve must’ve   neednt needn’t
    notve not’ve   oclock o’clock   oughtnt oughtn’t   ow’s’at ’ow’s’at
    shant shan’t   shed’ve she’d’ve   she’dve she’d’ve   she’s she’s
    shouldnt shouldn’t   shouldnt’ve shouldn’t’ve   shouldn’tve shouldn’t’ve   shouldve should’ve
    somebodyd’ve somebody’d’ve   somebodyll somebody’ll   somebodys somebody’s   somebody’d somebodyd
    somebody’dve somebody’d’ve   someoned someone’d   someoned’ve someone’d’ve   someonell someone’ll
    someones someone’s   someone’dve someone’d’ve   somethingd something’d   somethingd’ve something’d’ve
    somethingll something’ll   something’dve something’d’ve   thats that’s   thered there’d
    thered’ve there’d’ve   therere there’re   theres there’s   there’dve there’d’ve
    theyd they’d   theyd’ve they’d’ve   theyll they’ll   theyre they’re
    theyve they’ve   they’dve they’d’ve   twas ’twas   wasnt wasn’t
    wed’ve we’d’ve   werent weren’t   weve we've   we’dve we’d’ve
    whatll what’ll   whatre what’re   whats what’s   whatve what’ve
    whens when’s   whered where’d   wheres where's   whereve where’ve
    whod who’d   whod’ve who’d’ve   wholl who’ll   whos who’s
    whove who've   who’dve who’d’ve   whyll why’ll   whyre why’re
    whys why’s   wont won’t   wouldnt wouldn’t   wouldnt’ve wouldn’t’ve
    wouldn’tve wouldn’t’ve   wouldve would’ve   yall y’all   yall’d’ve y’all’d’ve
    yall’ll y’all’ll   youd you’d   youd’ve you’d’ve   youll you’ll
    youre you’re   youve you’ve   you’dve you’d’ve   y’alld’ve y’all’d’ve
    y’allll y’all’ll   y’all’dve y’all’d’ve   ’ows’at ’ow’s’at   ’ow’sat ’ow’s’at
""")


def strip_punctuation(text: str) -> str:
    """`processPunctuation`: each listed mark is deleted where it touches a space (or anywhere, once the text holds
    a digit-comma-digit run) and becomes a space elsewhere; then periods not followed by a digit go."""
    out = text
    joined = _DIGIT_COMMA_DIGIT.search(text) is not None
    for mark in PUNCTUATION:
        out = out.replace(mark, "" if joined or mark + " " in text or " " + mark in text else " ")
    return _PERIOD.sub("", out, count=_PERIODS_DROPPED)


def digits_and_articles(text: str, contractions: dict[str, str] = CONTRACTIONS) -> str:
    """`processDigitArticle`: lower-case, split on whitespace, number words to digits, drop articles, then the
    contraction table; words joined by one space."""
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    return " ".join(contractions.get(w, w) for w in words if w not in ARTICLES)


def _clean(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def normalize_answer(text: str) -> str:
    """The full answer processing: newlines and tabs to spaces, trimmed, punctuation, then digits and articles."""
    return digits_and_articles(strip_punctuation(_clean(text)))


def exact_match(prediction: str, answer: str) -> float:
    """vlmlab's exact match for short answers: 1.0 when both are equal after the full answer processing."""
    return float(normalize_answer(prediction) == normalize_answer(answer))


VQA_CONVENTIONS = {
    "official-2021": "GT-Vision-Lab/VQA vqaEval.py as fixed on 2021-03-11 (commit a013f00, the current version): "
    "answers are trimmed; only when the human answers disagree are the prediction and the answers normalized",
    "official-2016": "GT-Vision-Lab/VQA vqaEval.py before the 2021 fix (commit 458a8b2, 2016-10-08): the prediction "
    "is always normalized; the human answers lose punctuation only when they disagree",
}


def vqa_accuracy(prediction: str, human_answers: list[str], convention: str = "official-2021") -> float:
    """VQA accuracy of one prediction against the human answers (ten for VQAv2): each answer is left out in turn,
    the prediction scores min(1, matching others / 3), and the ten scores are averaged.

    `convention` names the evaluator version whose answer processing is used (`VQA_CONVENTIONS`). With a single
    gold answer (local data that has no human answers) the official rule would score 0 always; vlmlab scores
    exact match after the convention's processing instead."""
    if not human_answers:
        raise ValueError("vqa_accuracy needs at least one human answer")
    if convention == "official-2021":
        gold = [_clean(a) for a in human_answers]
        pred = _clean(prediction)
        if len(set(gold)) > 1:
            gold, pred = [normalize_answer(a) for a in gold], normalize_answer(pred)
    elif convention == "official-2016":
        gold, pred = list(human_answers), normalize_answer(prediction)
        if len(set(gold)) > 1:
            gold = [strip_punctuation(a) for a in gold]
    else:
        raise ValueError(f"unknown VQA accuracy convention {convention!r} (known: {', '.join(VQA_CONVENTIONS)})")
    if len(gold) == 1:
        return float(pred == gold[0] or normalize_answer(pred) == normalize_answer(gold[0]))
    return _leave_one_out(pred, gold)


def _leave_one_out(prediction: str, gold: list[str]) -> float:
    """The mean over the answers of min(1, matching answers among the others / 3)."""
    matches = [g == prediction for g in gold]
    total = sum(matches)
    return sum(min(1.0, (total - m) / 3) for m in matches) / len(gold)


def vizwiz_accuracy(prediction: str, human_answers: list[str]) -> float:
    """VizWiz accuracy as its evaluation API scores it (Qing Li's vqaEval.py, vizwiz.org): the prediction is always
    trimmed and normalized (punctuation, then digits/articles with the 2015 contraction table), the ten human
    answers are compared as they are (never normalized), leave-one-out as in VQA accuracy. An unanswerable
    question's humans mostly answer "unanswerable": the answer "Unanswerable" normalizes to it."""
    if not human_answers:
        raise ValueError("vizwiz_accuracy needs at least one human answer")
    pred = digits_and_articles(strip_punctuation(_clean(prediction)), VIZWIZ_CONTRACTIONS)
    if len(human_answers) == 1:
        return float(pred == human_answers[0])
    return _leave_one_out(pred, list(human_answers))


_COMMA_BETWEEN_DIGITS = re.compile(r"(?<=\d)(,)+(?=\d)")


def evalai_normalize(text: str) -> str:
    """EvalAI's answer processor (as LLaVA's `llava/eval/m4c_evaluator.py` EvalAIAnswerProcessor, from MMF): lower-case,
    delete commas and question marks, split off `'s`, trim; newlines and tabs to spaces; then the VQA punctuation
    rule (whose digit-comma trigger no longer fires: commas are gone) and digits/articles."""
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    out = text
    joined = _COMMA_BETWEEN_DIGITS.search(text) is not None
    for mark in PUNCTUATION:
        out = out.replace(mark, "" if joined or mark + " " in text or " " + mark in text else " ")
    return digits_and_articles(_PERIOD.sub("", out, count=_PERIODS_DROPPED))


def textvqa_accuracy(prediction: str, human_answers: list[str]) -> float:
    """TextVQA accuracy as LLaVA-1.5 scores it (`llava/eval/eval_textvqa.py` with m4c_evaluator's
    TextVQAAccuracyEvaluator, the EvalAI challenge's rule): the prediction and every human answer go through
    `evalai_normalize`, then leave-one-out VQA accuracy (0 for a prediction no human gave)."""
    if not human_answers:
        raise ValueError("textvqa_accuracy needs at least one human answer")
    gold = [evalai_normalize(a) for a in human_answers]
    pred = evalai_normalize(prediction)
    return float(pred == gold[0]) if len(gold) == 1 else _leave_one_out(pred, gold)


def gqa_match(prediction: str, answer: str) -> float:
    """GQA accuracy of one answer, as LLaVA's `scripts/convert_gqa_for_eval.py` (haotian-liu/LLaVA c121f04) then GQA's
    `eval.py` score it: the
    prediction with trailing periods stripped and lower-cased must equal the gold answer exactly (no other
    normalization: no articles dropped, no number words mapped, no whitespace trimmed)."""
    return float(prediction.rstrip(".").lower() == answer)
