from configs.schema import ReportConfig
from sim.report import write_report


def test_report_without_inputs_says_what_was_skipped(tmp_path):
    out = write_report(ReportConfig(run_dir=str(tmp_path)))
    text = out.read_text()
    assert "Skipped: no dataset" in text and "Skipped: no" in text and "eval_info.json" in text


def test_report_with_eval(tmp_path):
    from configs import compose
    from configs.schema import EvaluateConfig, validate
    from sim.evaluate import evaluate

    cfg = validate(compose("evaluate", ["task=[lift_bar]", "render=top_only", "render.height=64",
                                        "render.width=64", "eval.episodes_per_task=1", "workers=1",
                                        f"output_dir={tmp_path / 'eval'}", "eval.save_video=all"]), EvaluateConfig)
    evaluate(cfg)
    text = write_report(ReportConfig(run_dir=str(tmp_path))).read_text()
    assert "| lift_bar | 1/1 (100%)" in text
    assert (tmp_path / "report_assets" / "eval_success.png").stat().st_size > 1000
    assert "videos/lift_bar/seed100000.mp4" in text
