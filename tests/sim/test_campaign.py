"""eva-campaign end to end on tiny models: records, failures with reasons, metrics, report, exact resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import configs
from configs.schema import CampaignConfig, validate
from sim.campaign import EPISODES_FILE, MUJOCO, RECORD_KEY, episode_settings, run_campaign
from sim.records import load_records
from sim.judge import SuccessJudge

SIZE = 64
POLICIES = [
    {"kind": "expert", "name": "expert"},
    {"kind": "noisy_expert", "name": "noisy", "noise_level": 0.5},
    {"kind": "import", "name": "raising", "target": "tests.sim.bad_policies:RaisingPolicy"},
    {"kind": "import", "name": "nan", "target": "tests.sim.bad_policies:NaNPolicy"},
]


@pytest.fixture(scope="module")
def judge_path(tmp_path_factory):
    torch.manual_seed(0)
    judge = SuccessJudge(tasks=("lift_bar",), image_size=(SIZE, SIZE), channels=(8, 16), num_keypoints=4, hidden=16)
    path = tmp_path_factory.mktemp("judge") / "model"
    judge.save_pretrained(path)
    return path


def campaign_config(out, wm, judge, policies=POLICIES, overrides=()) -> CampaignConfig:
    dcfg = configs.compose("campaign", [
        "task=[lift_bar]", "tasks.lift_bar.step_limit=60", f"render.height={SIZE}", f"render.width={SIZE}",
        f"output_dir={out}", f"judge={judge}", "episodes_per_task=2", "only_expert_solvable=false", "workers=1",
        "imagination.chunk_frames=4", "imagination.steps=2", "imagination.batch_size=2", "consecutive=1",
        f"world_models=[tiny:{wm}]", *overrides])
    dcfg.policies = policies
    return validate(dcfg, CampaignConfig)


def test_campaign_records_every_episode_and_resumes_exactly(tmp_path, tiny_world_model, judge_path):
    cfg = campaign_config(tmp_path, tiny_world_model, judge_path)
    summary = run_campaign(cfg)
    records = load_records(tmp_path / EPISODES_FILE, RECORD_KEY)
    assert len(records) == 4 * 2 * 2  # policies x seeds x (MuJoCo, one world model)
    assert {k[3] for k in records} == {300000, 300001}  # RoboTwin seed block 2: held out from collection
    for evaluator in (MUJOCO, "tiny"):
        for seed in (300000, 300001):
            assert "model exploded" in records[(evaluator, "raising", "lift_bar", seed)]["failure_reason"]
            assert "non-finite" in records[(evaluator, "nan", "lift_bar", seed)]["failure_reason"]
            assert not records[(evaluator, "raising", "lift_bar", seed)]["success"]
    # 60 control steps are too few for the expert to lift the bar in MuJoCo
    assert not any(r["success"] for (e, *_), r in records.items() if e == MUJOCO)
    rates = summary["success"]
    assert set(rates) == {MUJOCO, "tiny"} and rates["tiny"]["lift_bar"]["expert"]["episodes"] == 2
    metrics = summary["metrics"]["tiny"]["per_task"]["lift_bar"]
    assert set(metrics) == {"pearson", "mmrv", "episode_agreement", "world_model_constant"}
    assert 0 <= metrics["mmrv"] <= 1 and 0 <= metrics["episode_agreement"] <= 1
    for name in ("campaign.json", "report.md", "scatter.png", "videos/tiny/lift_bar/expert.mp4"):
        assert (tmp_path / name).is_file(), name
    assert json.loads((tmp_path / "campaign.json").read_text())["policies"] == [p["name"] for p in POLICIES]
    assert "| lift_bar | noisy |" in (tmp_path / "report.md").read_text()

    # killed midway: the last records lost, one line torn. The rerun redoes exactly those.
    lines = (tmp_path / EPISODES_FILE).read_text().splitlines()
    (tmp_path / EPISODES_FILE).write_text("\n".join(lines[:-3]) + '\n{"evaluator": "tiny", "pol')
    run_campaign(cfg)
    resumed = load_records(tmp_path / EPISODES_FILE, RECORD_KEY)
    assert resumed.keys() == records.keys()
    for key, rec in records.items():
        assert resumed[key]["success"] == rec["success"] and resumed[key]["steps"] == rec["steps"], key
        np.testing.assert_allclose(resumed[key].get("max_probability", 0), rec.get("max_probability", 0), rtol=1e-6)

    # other imagination settings: the world-model episodes run again, the MuJoCo ones do not
    lines = len((tmp_path / EPISODES_FILE).read_text().splitlines())
    changed = campaign_config(tmp_path, tiny_world_model, judge_path, overrides=["imagination.steps=3"])
    summary = run_campaign(changed)
    assert len((tmp_path / EPISODES_FILE).read_text().splitlines()) == lines + 4 * 2
    assert summary["success"]["tiny"]["lift_bar"]["expert"]["episodes"] == 2


def test_too_few_policies_or_duplicate_labels_are_refused(tmp_path, judge_path):
    with pytest.raises(ValueError, match="at least 3 policies"):
        campaign_config(tmp_path, tmp_path, judge_path, POLICIES[:2])
    with pytest.raises(ValueError, match="labels must be unique"):
        campaign_config(tmp_path, tmp_path, judge_path, [POLICIES[0]] * 3)


def test_world_models_are_label_checkpoint_pairs(tmp_path, judge_path):
    cfg = validate(configs.compose("campaign", ["world_models=[sft:runs/wm/model,grpo:runs/grpo/model]"]),
                   CampaignConfig)
    assert cfg.world_model_paths == {"sft": "runs/wm/model", "grpo": "runs/grpo/model"}
    for bad in ("[runs/wm/model]", "[mujoco:runs/wm/model]", "[a:x,a:y]"):
        with pytest.raises(ValueError, match="world_models"):
            validate(configs.compose("campaign", [f"world_models={bad}"]), CampaignConfig)


def test_the_policies_list_is_validated_entry_by_entry(tmp_path, judge_path):
    bad = POLICIES[:2] + [{"kind": "teleport", "name": "x"}]
    with pytest.raises(ValueError, match="policy.kind"):
        campaign_config(tmp_path, tmp_path, judge_path, bad)
    assert OmegaConf.structured(campaign_config(tmp_path, tmp_path, judge_path)).policies[1].noise_level == 0.5


def test_planner_settings_only_enter_the_digest_of_planner_policies(tmp_path, judge_path):
    """A record's settings digest covers what decides its outcome: changing the planner section (say, a new
    planner field) leaves noisy-expert records valid and redoes planner ones."""
    policies = [*POLICIES[:3], {"kind": "planner", "name": "planner"}]
    base = campaign_config(tmp_path, tmp_path, judge_path, policies)
    changed = campaign_config(tmp_path, tmp_path, judge_path, [
        {**p, "planner": {"steps": 3, "asynchronous": True}} for p in policies])
    for i in range(3):
        assert episode_settings(base, i, "lift_bar") == episode_settings(changed, i, "lift_bar")
        assert episode_settings(base, i, "lift_bar", "tiny") == episode_settings(changed, i, "lift_bar", "tiny")
    assert episode_settings(base, 3, "lift_bar") != episode_settings(changed, 3, "lift_bar")
    assert episode_settings(base, 1, "lift_bar") != episode_settings(base, 0, "lift_bar")
