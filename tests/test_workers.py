"""Cells of a study dealt out to worker processes (defectsynth.workers.run_cells)."""

from omegaconf import OmegaConf

from defectsynth.workers import run_cells


def test_a_worker_runs_its_share_of_the_cells_not_yet_done():
    cells = [(name,) for name in "abcdefg"]
    finished = {"a", "c"}
    shares = []
    for index in range(2):
        ran: list[str] = []
        cfg = OmegaConf.create({"shard": f"{index}/2", "jobs": 1})
        result = run_cells(cfg, cells, None, ran.append, done=lambda c: c in finished)
        assert result is None  # a worker writes no table
        shares.append(ran)
    assert shares == [["b", "e", "g"], ["d", "f"]]  # pending b d e f g, dealt out in turn


def test_without_workers_every_cell_is_run_in_order():
    cells = [(name,) for name in "abc"]
    cfg = OmegaConf.create({"jobs": 1})
    assert run_cells(cfg, cells, None, lambda c: {"cell": c}) == [
        {"cell": "a"},
        {"cell": "b"},
        {"cell": "c"},
    ]
