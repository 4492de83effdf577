"""Selective parameter sharing (marl.selective): identity embeddings, clustering,
sharing.json, the index checks (the networks and the training mode:
tests/test_selective_mode.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import marl_envs
import pytest
import torch
from marl_envs.tasks.hidden_roles import hidden_role_assignment

from marl.nets import make_composed_group_net
from marl.selective import (
    GroupSharing,
    Transitions,
    canonical_labels,
    choose_k,
    collect_random_transitions,
    davies_bouldin,
    fit_identity_embeddings,
    fit_identity_model,
    kmeans,
    plot_embeddings,
    read_sharing,
    write_sharing,
)
from marl.selective.share import set_index

torch.set_num_threads(1)

F, OUT, A = 5, 3, 4


def _roles_transitions(num_roles: int, role_seed: int, num_agents: int = 6) -> Transitions:
    env = marl_envs.make(
        "toy/hidden_roles", num_envs=8,
        kwargs={"num_agents": num_agents, "num_roles": num_roles, "role_seed": role_seed},
    )
    transitions = collect_random_transitions(env, "agent", steps=40, seed=role_seed)
    env.close()
    return transitions


def _true_roles(num_roles: int, role_seed: int, num_agents: int = 6) -> torch.Tensor:
    roles = hidden_role_assignment(num_agents, num_roles, role_seed)
    return canonical_labels(torch.as_tensor(roles))


# --- K-stack network ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("index", "message"),
    [
        ([0, 2, 2, 1, 5], r"networks \[3, 4\] have none"),
        ([-1, 0], r"in \[0, 1\)"),
        ([], "non-empty 1-D"),
    ],
)
def test_malformed_index_is_refused(index: list[int], message: str) -> None:
    net = make_composed_group_net("selective", (F,), OUT, max(len(index), 1), hidden=(8,))
    with pytest.raises(ValueError, match=message):
        set_index([net], "agents", torch.tensor(index, dtype=torch.int64))


# --- clustering ---------------------------------------------------------------------------


def test_kmeans_finds_separated_blobs_canonically_and_deterministically() -> None:
    generator = torch.Generator().manual_seed(0)
    centres = torch.tensor([[5.0, 0.0], [0.0, 5.0], [-5.0, -5.0]])
    truth = torch.tensor([2, 2, 0, 1, 0, 1, 2, 1, 0])
    points = centres[truth] + 0.1 * torch.randn(9, 2, generator=generator)
    labels = kmeans(points, 3, seed=1)
    torch.testing.assert_close(labels, canonical_labels(truth))
    assert labels[0] == 0
    assert torch.equal(kmeans(points, 3, seed=1), labels)


def test_canonical_labels_by_first_appearance() -> None:
    assert canonical_labels(torch.tensor([2, 2, 0, 1, 0])).tolist() == [0, 0, 1, 2, 1]


def test_davies_bouldin_by_hand() -> None:
    # Clusters {0, 2} and {10, 12} on a line: spreads 1 and 1, centroids 10 apart.
    points = torch.tensor([[0.0], [2.0], [10.0], [12.0]])
    labels = torch.tensor([0, 0, 1, 1])
    assert davies_bouldin(points, labels) == pytest.approx(0.2)
    # With posterior width 1 every distance to a centroid becomes sqrt(1 + 1).
    assert davies_bouldin(points, labels, scale=1.0) == pytest.approx(2 * math.sqrt(2) / 10)


@pytest.mark.parametrize("bad", [0, 5, -1, 2.5, "three"])
def test_bad_k_is_refused_in_one_line(bad: object) -> None:
    with pytest.raises(ValueError, match=r"number of networks K must be") as caught:
        choose_k(torch.randn(4, 2), bad)  # type: ignore[arg-type]
    assert "\n" not in str(caught.value)


# --- identity embeddings + clustering on hidden roles -----------------------------------


@pytest.mark.parametrize(("num_roles", "role_seed"), [(3, 0), (3, 1), (3, 2), (2, 3)])
def test_embeddings_recover_the_hidden_roles(num_roles: int, role_seed: int) -> None:
    fit = fit_identity_model(_roles_transitions(num_roles, role_seed), 3, seed=role_seed)
    truth = _true_roles(num_roles, role_seed)
    given = choose_k(fit.mean, num_roles, scale=fit.posterior_std, seed=role_seed)
    assert given.index.tolist() == truth.tolist()
    auto = choose_k(fit.mean, "auto", scale=fit.posterior_std, seed=role_seed)
    assert auto.num_networks == num_roles
    assert auto.index.tolist() == truth.tolist()
    assert auto.score == min(auto.scores.values())


def test_alike_agents_get_one_network_under_auto() -> None:
    fit = fit_identity_model(_roles_transitions(1, 0), 3, seed=0)
    spread = float((fit.mean - fit.mean.mean(0)).norm(dim=1).max())
    assert spread < 0.5 * fit.posterior_std  # measured 0.06 to 0.15 over 5 seeds
    auto = choose_k(fit.mean, "auto", scale=fit.posterior_std)
    assert auto.num_networks == 1 and auto.index.tolist() == [0] * 6
    # Different roles spread by several posterior widths (measured 4 to 13).
    differ = fit_identity_model(_roles_transitions(3, 0), 3, seed=0)
    radius = float((differ.mean - differ.mean.mean(0)).norm(dim=1).max())
    assert radius > 2.0 * differ.posterior_std


def test_permuting_agents_permutes_the_assignment_only() -> None:
    transitions = _roles_transitions(3, 1)
    order = torch.tensor([4, 2, 0, 5, 1, 3])
    permuted = Transitions(*(
        field[:, order] for field in transitions
    ))
    embeddings = fit_identity_embeddings(transitions, 3, seed=1)
    embeddings_permuted = fit_identity_embeddings(permuted, 3, seed=1)
    labels = choose_k(embeddings, 3).index
    labels_permuted = choose_k(embeddings_permuted, 3).index
    assert labels_permuted.tolist() == canonical_labels(labels[order]).tolist()
    # Clustering alone is equivariant too: permuted points give permuted labels.
    assert choose_k(embeddings[order], 3).index.tolist() == canonical_labels(labels[order]).tolist()


def test_same_seed_same_embeddings() -> None:
    transitions = _roles_transitions(3, 0)
    first = fit_identity_embeddings(transitions, 3, steps=50, seed=7)
    torch.testing.assert_close(first, fit_identity_embeddings(transitions, 3, steps=50, seed=7),
                               rtol=0, atol=0)
    assert not torch.equal(first, fit_identity_embeddings(transitions, 3, steps=50, seed=8))


def test_continuous_actions_and_dead_agents_are_accepted() -> None:
    generator = torch.Generator().manual_seed(0)
    n = 64
    obs = torch.randn(n, 3, 2, generator=generator)
    action = torch.randn(n, 3, 1, generator=generator)
    alive = torch.ones(n, 3, dtype=torch.bool)
    alive[:, 2] = False  # agent 2 never acts: only the KL term touches its embedding
    reward = action[..., 0] * torch.tensor([1.0, -1.0, 0.0])
    fit = fit_identity_model(Transitions(obs, action, obs, reward, alive), steps=100)
    assert fit.mean.shape == (3, 4) and math.isfinite(fit.losses[-1])  # Z = 4 by default
    assert fit.losses[-1] < fit.losses[0]


# --- sharing.json -------------------------------------------------------------------------


def test_sharing_json_round_trip_and_plot(tmp_path: Path) -> None:
    embeddings = torch.tensor([[0.0, 1.0], [3.0, 1.0], [0.1, 1.1], [3.1, 0.9]])
    clustering = choose_k(embeddings, 2)
    agents = ("a", "b", "c", "d")
    groups = {
        "runner": GroupSharing.from_clustering(agents, embeddings, clustering),
        "solo": GroupSharing(("s",), (0,), ((0.5,),), 1),
    }
    path = tmp_path / "run" / "sharing.json"
    write_sharing(path, groups)
    document = json.loads(path.read_text())
    assert document["runner"] == {"a": 0, "b": 1, "c": 0, "d": 1}
    assert document["_details"]["runner"]["num_networks"] == 2
    assert document["_details"]["solo"]["score"] is None
    back = read_sharing(path)
    assert back["runner"] == groups["runner"]
    assert back["solo"].mapping == {"s": 0} and math.isnan(back["solo"].score)
    plot_embeddings(tmp_path / "embeddings.png", back["runner"])
    assert (tmp_path / "embeddings.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "is not valid JSON"),
        ('{"g": {"a": 0, "b": 2}}', r"group 'g'.*networks \[1\] have none"),
        ('{"g": {"a": "0"}}', "must map agent names to integer"),
    ],
)
def test_bad_sharing_json_is_refused_in_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "sharing.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as caught:
        read_sharing(path)
    assert "\n" not in str(caught.value)


def test_missing_sharing_json_says_when_it_is_written(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="written when selective sharing"):
        read_sharing(tmp_path / "sharing.json")
