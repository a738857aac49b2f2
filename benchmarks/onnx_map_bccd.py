"""The ONNX Runtime mAP gate: COCO metrics of a trained detector on its
test set with PyTorch (NCHW, mmdetection's arithmetic), PyTorch's default
path (channels-last) and onnxruntime running the graph of
tools/deployment/export_onnx.py, one after the other in one process.

    python benchmarks/onnx_map_bccd.py CONFIG CHECKPOINT [--threads 2]
        [--tolerance 0.001] [--out F]

CONFIG is the file the runner dumped into its work_dir (for example after
``python benchmarks/train_run_bccd.py --workers 2``:
``work_dirs/bench_train_run/workers2/<timestamp>/vis_data/config.py``), so
its test loader is the one the model was validated on. The export is
``--dynamic`` (every test image keeps its size), batch 1. Prints each
metric for the three paths and the largest difference from NCHW PyTorch;
exits with status 1 when onnxruntime or channels-last differs by more than
``--tolerance`` on any of the 12 COCO statistics.
"""
import argparse
import importlib.util
import logging
import os.path as osp
import sys
import tempfile

import torch

from common import REPO_ROOT, print_header, save_json, set_threads


def load_export_onnx():
    path = osp.join(REPO_ROOT, 'tools', 'deployment', 'export_onnx.py')
    spec = importlib.util.spec_from_file_location('detkit_export_onnx', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def coco_metrics(cfg, predict):
    """COCO metrics of ``predict(batch) -> data samples`` over the
    config's test loader (batch 1)."""
    from mmengine.registry import DefaultScope
    from mmengine.runner import Runner

    from detkit.registry import METRICS
    loader_cfg = dict(cfg.test_dataloader, batch_size=1, num_workers=0,
                      persistent_workers=False)
    with DefaultScope.overwrite_default_scope('detkit'):
        loader = Runner.build_dataloader(loader_cfg)
        metric = METRICS.build(cfg.test_evaluator)
    metric.dataset_meta = loader.dataset.metainfo
    for batch in loader:
        samples = predict(batch)
        metric.process(batch, [s.to_dict() for s in samples])
    return metric.evaluate(len(loader.dataset))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--threads', type=int, default=0)
    parser.add_argument('--tolerance', type=float, default=1e-3)
    parser.add_argument('--out')
    args = parser.parse_args(argv)
    set_threads(args.threads)
    from mmengine.config import Config
    from mmengine.logging import MMLogger

    from detkit.apis import init_detector
    MMLogger.get_instance('mmengine').setLevel(logging.WARNING)
    info = print_header('ONNX Runtime mAP gate', args)
    cfg = Config.fromfile(args.config)
    export_onnx = load_export_onnx()

    def torch_path(channels_last):
        model = init_detector(cfg, args.checkpoint,
                              channels_last=channels_last)

        def predict(batch):
            with torch.no_grad():
                return model.test_step(batch)
        return model, predict

    nchw_model, nchw = torch_path(False)
    _, default = torch_path(True)
    onnx_file = osp.join(tempfile.mkdtemp(prefix='detkit_onnx_map_'),
                         'model.onnx')
    export_onnx.export(nchw_model, onnx_file,
                       export_onnx.test_input_shape(cfg), dynamic=True)
    session = export_onnx.ORTDetector(onnx_file,
                                      threads=torch.get_num_threads())
    results = {name: coco_metrics(cfg, fn) for name, fn in (
        ('pytorch_nchw', nchw), ('pytorch_channels_last', default),
        ('onnxruntime', session.test_step))}
    keys = list(results['pytorch_nchw'])
    print(f'{"metric":<24}' + ''.join(f'{n:>24}' for n in results))
    for key in keys:
        print(f'{key:<24}' +
              ''.join(f'{r[key]:>24.4f}' for r in results.values()))
    worst = {}
    for name in ('pytorch_channels_last', 'onnxruntime'):
        worst[name] = max(abs(results[name][k] - results['pytorch_nchw'][k])
                          for k in keys)
        print(f'largest difference {name} - pytorch_nchw: '
              f'{worst[name]:.4f} (gate {args.tolerance})')
    save_json(args.out, dict(machine=info, results=results, worst=worst))
    return 0 if max(worst.values()) <= args.tolerance else 1


if __name__ == '__main__':
    sys.exit(main())
