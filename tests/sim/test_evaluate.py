import json

import numpy as np
import pytest

from configs import compose
from configs.schema import EvaluateConfig, validate
from sim.evaluate import evaluate


def _cfg(tmp_path, *overrides):
    dcfg = compose("evaluate", ["task=[lift_bar]", "render=top_only", "render.height=64", "render.width=64",
                                "eval.episodes_per_task=2", "workers=1", f"output_dir={tmp_path}", *overrides])
    return validate(dcfg, EvaluateConfig)


def test_expert_eval_info_schema(tmp_path):
    info = evaluate(_cfg(tmp_path, "eval.save_video=all"))
    on_disk = json.loads((tmp_path / "eval_info.json").read_text())
    assert on_disk["aggregated"] == info["aggregated"]
    for key in ("pc_success", "avg_sum_reward", "avg_max_reward", "eval_s", "eval_ep_s"):
        assert key in on_disk["aggregated"]
    assert set(on_disk["per_task"]) == {"lift_bar"}
    assert on_disk["overall"]["n_episodes"] == 2
    eps = on_disk["per_episode"]
    assert [e["episode_ix"] for e in eps] == [0, 1]
    assert [e["seed"] for e in eps] == [100000, 100001]  # RoboTwin: st_seed = 100000 * (1 + 0)
    for e in eps:
        assert {"episode_ix", "sum_reward", "max_reward", "success", "seed"} <= set(e)
        assert e["success"] and e["max_reward"] == 1.0
        assert (tmp_path / "videos" / "lift_bar" / f"seed{e['seed']}.mp4").exists()
    assert on_disk["aggregated"]["pc_success"] == 100.0
    # held-out instructions are used for evaluation
    from configs import load_task_config

    assert all(e["instruction"] in load_task_config("lift_bar").eval_instructions for e in eps)


@pytest.mark.parametrize(
    "target,reason",
    [
        ("tests.sim.bad_policies:NaNPolicy", "non-finite"),
        ("tests.sim.bad_policies:RaisingPolicy", "model exploded"),
        ("tests.sim.bad_policies:WrongShapePolicy", "shape"),
    ],
)
def test_bad_policy_fails_episode_not_run(tmp_path, target, reason):
    info = evaluate(_cfg(tmp_path, "policy=import", f"policy.target={target}", "eval.save_video=failed"))
    eps = info["per_episode"]
    assert len(eps) == 2
    assert all(not e["success"] and reason in e["failure_reason"] for e in eps)
    assert info["aggregated"]["pc_success"] == 0.0
    assert all(e["video_path"] for e in eps)  # failed episodes keep their video


def test_hold_policy_hits_step_limit(tmp_path):
    info = evaluate(_cfg(tmp_path, "policy=import", "policy.target=tests.sim.bad_policies:HoldPolicy",
                         "eval.save_video=none", "eval.episodes_per_task=1"))
    (ep,) = info["per_episode"]
    assert not ep["success"] and "step limit" in ep["failure_reason"]
    assert ep["video_path"] is None


def test_noisy_expert_differs_from_expert_and_is_seeded():
    from configs import load_task_config
    from configs.embodiment import load_embodiment
    from configs.schema import RenderConfig
    from sim.policies import NoisyExpertPolicy, ScriptedExpertPolicy
    from sim.tasks import make_task

    env = make_task(load_task_config("lift_bar"), load_embodiment("aloha_viperx"), RenderConfig(cameras=["cam_high"]))
    obs = {"joint_action": {"vector": np.zeros(14)}}
    runs = []
    for policy in (ScriptedExpertPolicy(env), NoisyExpertPolicy(env, 0.1, 0.9), NoisyExpertPolicy(env, 0.1, 0.9)):
        env.setup_demo(seed=100003)
        policy.reset()
        runs.append(np.array([policy.select_action(obs) for _ in range(20)]))
    assert not np.allclose(runs[0], runs[1])
    np.testing.assert_array_equal(runs[1], runs[2])
    assert np.all(env.embodiment.within_position_limits(runs[1]))
    env.close_env()


def test_unknown_import_target_is_refused(tmp_path):
    with pytest.raises(Exception, match="cannot be imported"):
        evaluate(_cfg(tmp_path, "policy=import", "policy.target=tests.sim.bad_policies:Missing",
                      "eval.episodes_per_task=1"))


def test_rerun_resumes_from_episode_records(tmp_path):
    from sim.evaluate import EPISODES_FILE

    first = evaluate(_cfg(tmp_path, "eval.save_video=none"))["per_episode"]
    records = tmp_path / EPISODES_FILE
    assert len(records.read_text().splitlines()) == 2
    with open(records, "a") as f:
        f.write('{"task": "lift_bar", "seed": 100002, "succ')  # a record torn by a kill
    # one more episode: the two finished ones are reused as they are (their wall time too), one is run
    more = evaluate(_cfg(tmp_path, "eval.save_video=none", "eval.episodes_per_task=3"))["per_episode"]
    assert more[:2] == first
    assert [e["seed"] for e in more] == [100000, 100001, 100002] and all(e["success"] for e in more)
    lines = [json.loads(line) for line in records.read_text().splitlines()]
    assert [r["seed"] for r in lines] == [100000, 100001, 100002]
    # other settings (a rendering change) redo every episode
    other = evaluate(_cfg(tmp_path, "eval.save_video=none", "render.height=48"))["per_episode"]
    assert [e["eval_s"] for e in other] != [e["eval_s"] for e in first]
    assert len(records.read_text().splitlines()) == 5
