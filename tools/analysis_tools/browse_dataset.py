"""Look at training samples as the model gets them: after the whole
pipeline (resize, flip, crop, photometric changes), with their boxes.

    python tools/analysis_tools/browse_dataset.py CONFIG --output-dir vis \
        --not-show --max-images 20

Pictures are saved as ``OUTPUT_DIR/<image file name>``; without
``--not-show`` each is also shown in a window for ``--show-interval``
seconds (needs a display).
"""
import argparse
import os
import os.path as osp

from mmengine.config import Config, DictAction


def _load_cfg(path, cfg_options=None):
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    from detkit.utils import to_detkit_scope
    to_detkit_scope(cfg, source=path)  # mmdetection configs run as they are
    return cfg


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Browse a dataset')
    parser.add_argument('config', help='config file')
    parser.add_argument('--output-dir', help='save the pictures here')
    parser.add_argument('--not-show', action='store_true',
                        help='do not open a window')
    parser.add_argument('--show-interval', type=float, default=2,
                        help='seconds per shown picture')
    parser.add_argument('--dataset-type', default='train',
                        choices=['train', 'val', 'test'],
                        help='which data loader\'s dataset (default train)')
    parser.add_argument('--max-images', type=int,
                        help='stop after this many samples')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args(argv)


def main(argv=None):
    """Returns the paths of the saved pictures."""
    args = parse_args(argv)
    if args.not_show and not args.output_dir:
        raise SystemExit('nothing to do: give --output-dir or drop '
                         '--not-show')
    cfg = _load_cfg(args.config, args.cfg_options)
    from mmengine.registry import init_default_scope
    from mmengine.utils import ProgressBar

    from detkit.registry import DATASETS
    from detkit.visualization import DetLocalVisualizer
    init_default_scope(cfg.default_scope)
    dataset = DATASETS.build(cfg[f'{args.dataset_type}_dataloader'].dataset)
    visualizer = DetLocalVisualizer(name='browse_dataset')
    visualizer.dataset_meta = dataset.metainfo
    if args.output_dir:
        os.makedirs(args.output_dir, exist_ok=True)
    count = len(dataset) if args.max_images is None else min(
        args.max_images, len(dataset))
    bar = ProgressBar(count)
    saved = []
    for idx in range(count):
        item = dataset[idx]
        sample = item['data_samples']
        # Packed images are (3, H, W) in the pipeline's channel order (BGR).
        image = item['inputs'].permute(1, 2, 0).numpy()[..., ::-1]
        name = osp.basename(sample.img_path) if sample.get(
            'img_path') else f'{idx:08d}.jpg'
        out_file = osp.join(args.output_dir, name) if args.output_dir \
            else None
        visualizer.add_datasample(
            name, image, data_sample=sample, draw_pred=False,
            show=not args.not_show, wait_time=args.show_interval,
            out_file=out_file)
        if out_file:
            saved.append(out_file)
        bar.update()
    print()
    return saved


if __name__ == '__main__':
    main()
