"""Fixtures shared by the engine tests."""
import pytest
from engine_toys import start_train, wait_all, write_toy_config


@pytest.fixture(scope='session')
def straight_toy_run(tmp_path_factory):
    """tools/train.py on the toy config of engine_toys.write_toy_config (3
    epochs of 4 iterations, a validation after each), uninterrupted: the
    run every interrupted-and-resumed one must equal. Returns its
    work_dir."""
    root = tmp_path_factory.mktemp('straight_toy')
    cfg = write_toy_config(root / 'toy.py')
    proc = start_train(cfg, root / 'work')
    out, = wait_all([proc])
    assert proc.returncode == 0, out[-3000:]
    return root / 'work'
