"""The weights label a trained checkpoint carries: what it started from, what training changed, and at
which step. One rule for every cell model, so a row's `weights` column says what made it (and a frozen
random backbone keeps saying UNTRAINED, which eval and report warn about)."""

from __future__ import annotations

import re

_UNTRAINED = re.compile(r"\bUNTRAINED\s*|\s*\(random init\)")


def trained_label(initial: str, step: int | None, *, heads: str, backbone_trained: bool) -> str:
    """`initial` is the label the model was built with ("SOURCE backbone; heads UNTRAINED ..."): the
    part before the first ';' names the starting backbone. `heads` names what always trains."""
    backbone = initial.split(";")[0].strip() or "backbone"
    at = f" (step {step})" if step is not None else ""
    if not backbone_trained:
        return f"{backbone}, frozen; {heads} trained{at}"
    if "UNTRAINED" in backbone:
        return f"{_UNTRAINED.sub('', backbone).strip()} trained from random init; {heads} trained{at}"
    return f"{backbone} fine-tuned end to end; {heads} trained{at}"
