"""MBPP: 500 test problems (task ids 11-510), the artifact's 3-shot [BEGIN]/[DONE] prompt.

Prompt = the 3 exemplars (``mbpp/shots.md``; from the Hub: the prompt split's task ids 2, 3, 4)
+ "\\n\\n" + the problem in the same template, ending in "[BEGIN]\\n".

Scoring runs a program in the sandbox; the completion passes when it runs to its end.
``paper`` rules: the artifact's post-processing (the first function only, see
``paper_code``) + the 3 asserts, 3 s. ``strict``: the code before "[DONE]" (without a
leading "[BEGIN]" or code fence) + the problem's test_setup_code + its 3 asserts, 10 s.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from experiments.accuracy_tasks import data, paper_code
from experiments.accuracy_tasks.rules import DEFAULT_RULES, PAPER, program_score

HUB_DATASET = "google-research-datasets/mbpp"
HUB_SHOT_IDS = (2, 3, 4)
TEMPLATE = (
    "You are an expert Python programmer, and here is your task: {text} "
    "Your code should pass these tests:\n\n{tests}\n[BEGIN]\n"
)

# The artifact's prompt for task 493 shows two shorter asserts (same function, other
# arguments; the reference solution passes them) in place of the dataset's first two, which
# are about 1,900 characters each. Its third assert is the dataset's. Scoring always uses
# the dataset's test_list.
ARTIFACT_PROMPT_ASSERTS: dict[int, tuple[str, ...]] = {
    493: (
        "assert calculate_polygons(10,5,4,3,3)==[[(4.0, -0.19615242270663158), "
        "(4.0, 3.2679491924311233), (7.0, 5.0), (10.0, 3.2679491924311233), "
        "(10.0, -0.19615242270663158), (7.0, -1.9282032302755088), "
        "(4.0, -0.19615242270663158)], [(7.0, 5.0), (7.0, 8.464101615137755), "
        "(10.0, 10.196152422706632), (13.0, 8.464101615137755), (13.0, 5.0), "
        "(10.0, 3.2679491924311233), (7.0, 5.0)], [(4.0, 10.196152422706632), "
        "(4.0, 13.660254037844387), (7.0, 15.392304845413264), "
        "(10.0, 13.660254037844387), (10.0, 10.196152422706632), "
        "(7.0, 8.464101615137755), (4.0, 10.196152422706632)]]",
        "assert calculate_polygons(8,3,2,2,2)==[[(4.0, -0.4641016151377544), "
        "(4.0, 1.8452994616207485), (6.0, 3.0), (8.0, 1.8452994616207485), "
        "(8.0, -0.4641016151377544), (6.0, -1.6188021535170058), "
        "(4.0, -0.4641016151377544)], [(4.0, 6.464101615137754), "
        "(4.0, 8.773502691896258), (6.0, 9.928203230275509), (8.0, 8.773502691896258), "
        "(8.0, 6.464101615137754), (6.0, 5.309401076758503), (4.0, 6.464101615137754)]]",
    )
}

_FENCE = re.compile(r"```[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


def problem_text(text: str, tests: list[str]) -> str:
    """One problem in the artifact's template, up to and including "[BEGIN]\\n"."""
    return TEMPLATE.format(text=text, tests="\n".join(tests))


def extract_code(completion: str) -> str:
    """The code of a completion: before "[DONE]", without a leading "[BEGIN]" or code fence."""
    code = completion.split("[DONE]", 1)[0]
    if code.lstrip().startswith("[BEGIN]"):
        code = code.lstrip()[len("[BEGIN]") :]
    fenced = _FENCE.search(code)
    return fenced.group(1) if fenced else code


def program(doc: dict[str, Any], completion: str) -> str:
    """The program the sandbox runs under ``strict`` rules: code, setup code, the asserts."""
    parts = [extract_code(completion), doc.get("test_setup_code") or "", *doc["test_list"]]
    return "\n".join(parts) + "\n"


def _hub_shots() -> str:
    rows = {row["task_id"]: row for row in data.hub_rows("mbpp", HUB_DATASET, "full", "prompt")}
    shots = []
    for task_id in HUB_SHOT_IDS:
        row = rows[task_id]
        code = row["code"].replace("\r\n", "\n")
        shots.append(problem_text(row["text"], row["test_list"]) + code + "\n[DONE]")
    return "\n\n".join(shots)


class Mbpp:
    """The MBPP task (pass@1 of greedy generations)."""

    name = "mbpp"
    kind = "generate"
    stop: tuple[str, ...] = ("[DONE]",)
    max_new_tokens = 512

    def load_problems(
        self, data_dir: Path | None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        local = data.local_file(data_dir, "mbpp", "test.jsonl")
        if local is not None:
            rows = data.read_jsonl(local)
        else:
            looked = data.where_local(data_dir, "mbpp", "test.jsonl")
            rows = data.hub_rows("mbpp", HUB_DATASET, "full", "test", looked)
            rows.sort(key=lambda row: row["task_id"])
        return data.number_docs(rows, limit)

    def load_docs(self, data_dir: Path | None, limit: int | None = None) -> list[dict[str, Any]]:
        docs = self.load_problems(data_dir, limit)
        shots = data.read_shots(data_dir, "mbpp")
        if shots is None:
            shots = _hub_shots()
        return [{**doc, "fewshot": shots} for doc in docs]

    def prompt(self, doc: dict[str, Any]) -> str:
        tests = list(doc["test_list"])
        shown = ARTIFACT_PROMPT_ASSERTS.get(doc["task_id"], ())
        tests[: len(shown)] = shown
        return doc["fewshot"] + "\n\n" + problem_text(doc["text"], tests)

    def score(self, doc: dict[str, Any], completion: str, rules: str = DEFAULT_RULES) -> float:
        if rules == PAPER:
            return program_score(paper_code.mbpp_program(doc, completion), rules)
        return program_score(program(doc, completion), rules)
