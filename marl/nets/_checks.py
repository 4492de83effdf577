"""Argument and shape checks shared by the group networks.

Kept in one place so every network reports a bad argument or a bad input shape in the same
words: what was expected, what arrived, and how to fix it.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import torch


def check_choice(name: str, value: str, allowed: Collection[str]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``allowed``.

    The message names the argument, the allowed values and what arrived.
    """
    if value not in allowed:
        choices = ", ".join(repr(choice) for choice in allowed)
        raise ValueError(f"{name} must be one of {choices}; got {value!r}.")


def check_positive(name: str, value: int) -> None:
    """Raise ``ValueError`` unless the integer ``value`` is at least 1."""
    if value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}.")


def check_group_input(x: torch.Tensor, num_agents: int, in_features: int, owner: str) -> None:
    """Check that ``x`` has shape ``[*B, num_agents, in_features]``.

    Args:
        x: the input of a group network, ``[*B, A, F]`` with any number of batch dims.
        num_agents: ``A``, the number of agents the network was built for.
        in_features: ``F``, the per-agent feature size the network was built for.
        owner: class name used in the message, so the user knows which network complained.
    """
    if x.dim() >= 2 and x.shape[-2] == num_agents and x.shape[-1] == in_features:
        return
    raise ValueError(
        f"{owner} expected input of shape [..., {num_agents}, {in_features}] "
        f"([*batch, num_agents, in_features]), got {list(x.shape)}. "
        "Keep the agent axis second to last, e.g. obs[T, E, A, F]; "
        "do not fold the agents into the batch."
    )


def check_shape(
    tensor: torch.Tensor, expected: Sequence[int | str], name: str, owner: str, layout: str
) -> None:
    """Raise ``ValueError`` unless ``tensor`` has shape ``expected``.

    Args:
        tensor: the tensor to check.
        expected: one entry per axis: an ``int`` the axis must equal, or a ``str`` naming an
            axis of any size (``"T"``), shown as is in the message.
        name: the argument's name, e.g. ``"hidden"``.
        owner: class name used in the message, so the user knows which network complained.
        layout: the axes in words, e.g. ``"[batch, num_agents, hidden_size]"``.
    """
    shape = tuple(tensor.shape)
    if len(shape) == len(expected) and all(
        isinstance(want, str) or size == want for size, want in zip(shape, expected, strict=True)
    ):
        return
    raise ValueError(
        f"{owner} expected {name} of shape [{', '.join(map(str, expected))}] ({layout}), "
        f"got {list(shape)}."
    )
