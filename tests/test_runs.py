"""Reading runs: malformed lines are skipped and reported, a half-written last line waits."""

from __future__ import annotations

import json

from lab.runs import find_runs, load_run, parse_metrics


def test_malformed_and_partial_lines():
    text = ('{"event": "train", "step": 1}\n'
            'not json\n'
            '[1, 2]\n'
            '\n'
            '{"event": "train", "step": 2}\n'
            '{"event": "train", "st')  # a live run in the middle of writing this line
    log = parse_metrics(text.encode(), "m.jsonl")
    assert [r["step"] for r in log.records] == [1, 2]
    assert len(log.problems) == 2
    assert log.problems[0].startswith("m.jsonl line 2: not valid JSON")
    assert "line 3: not a JSON object" in log.problems[1]


def test_runs_are_found_and_loaded(tmp_path):
    for name in ("b", "a/nested"):
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "metrics.jsonl").write_text(json.dumps({"event": "eval", "step": 3}) + "\n")
    (tmp_path / "a" / "nested" / "meta.json").write_text("{broken")
    (tmp_path / "empty").mkdir()
    assert [p.relative_to(tmp_path).as_posix() for p in find_runs(tmp_path)] == ["a/nested", "b"]
    run = load_run(tmp_path / "a" / "nested")
    assert run.meta == {} and run.events("eval")[0]["step"] == 3
    assert any("meta.json: not valid JSON" in p for p in run.metrics.problems)


def test_world_size_comes_from_the_environment_and_defaults_to_one(tmp_path):
    for name, meta, expected in [("two", {"environment": {"world_size": 2}}, 2), ("none", {}, 1),
                                 ("bad", {"environment": {"world_size": "2"}}, 1),
                                 ("zero", {"environment": {"world_size": 0}}, 1)]:
        run_dir = tmp_path / name
        run_dir.mkdir()
        (run_dir / "meta.json").write_text(json.dumps(meta))
        (run_dir / "metrics.jsonl").write_text("")
        assert load_run(run_dir).world_size == expected, name
