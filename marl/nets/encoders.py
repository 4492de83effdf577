"""Which observation encoder a group uses: :func:`choose_encoder`.

A composed network is ``encoder -> (one-hot ID) -> trunk -> (GRU) -> head``. The encoder
follows the observation's shape (one agent's, without batch or agent axes):

- ``"mlp"``: flat ``[D]``; no encoder, the MLP trunk reads the features directly. Named
  explicitly it takes any shape, flattened (an MLP on an image or on entity rows, the
  baseline the other encoders are measured against);
- ``"cnn"``: images ``[H, W, C]``, channels last (:mod:`marl.nets.cnn`);
- ``"entity"``: entity rows ``[N, F]`` (:mod:`marl.nets.entity`); a flat observation
  gets this shape from an :class:`~marl.nets.entity_layout.EntityLayout`.
"""

from __future__ import annotations

from collections.abc import Sequence

from marl.nets._checks import check_choice

ENCODER_SHAPES = {"mlp": "[D]", "cnn": "[H, W, C]", "entity": "[N, F]"}
"""Every encoder and the per-agent observation shape it takes."""

ENCODERS = ("auto", *ENCODER_SHAPES)
"""Allowed values of ``choose_encoder(requested=...)``."""

_RANKS = {"mlp": 1, "cnn": 3, "entity": 2}
"""How many axes each encoder's observation has."""


def choose_encoder(obs_shape: Sequence[int], requested: str = "auto") -> str:
    """The encoder for one agent's observation of ``obs_shape``: ``"mlp"``, ``"cnn"`` or
    ``"entity"``.

    Args:
        obs_shape: one agent's observation shape, e.g. ``(18,)``, ``(7, 7, 3)``, ``(6, 7)``.
        requested: ``"auto"`` (by the number of axes: 1 -> mlp, 2 -> entity, 3 -> cnn) or
            an encoder name, which is checked against the shape (``"mlp"`` takes any
            shape, flattened).

    Raises:
        ValueError: for an unknown name, or a shape the requested encoder (for ``"auto"``:
            every encoder) does not take.
    """
    check_choice("encoder", requested, ENCODERS)
    shape = [int(size) for size in obs_shape]
    expected = ", ".join(f"{name} takes {layout}" for name, layout in ENCODER_SHAPES.items())
    by_rank = {rank: name for name, rank in _RANKS.items()}
    chosen = by_rank.get(len(shape)) if requested == "auto" else requested
    flattens = requested == "mlp" and len(shape) >= 1  # a named MLP reads any shape flat
    if chosen is None or (len(shape) != _RANKS[chosen] and not flattens):
        raise ValueError(_mismatch(shape, requested, expected))
    if min(shape) < 1:
        raise ValueError(
            f"observation shape {shape} has an empty axis; every axis needs size >= 1."
        )
    return chosen


def _mismatch(shape: list[int], requested: str, expected: str) -> str:
    """The one-line message for a shape ``requested`` does not take."""
    if requested == "auto":
        return (
            f"no encoder takes observations of shape {shape}: {expected}. Reshape the "
            "observation, name encoder 'mlp' (it flattens any shape), or give an entity "
            "layout for a flat one."
        )
    return (
        f"encoder {requested!r} does not take observations of shape {shape}: {expected}. "
        "Set encoder to 'auto', to the encoder for this shape, or to 'mlp' (it flattens "
        "any shape)."
    )
