# LSJ as in lsj-100e_coco-detection.py with the training set repeated 8
# times per epoch: 25 epochs = 200 passes, 1000 iterations of warm-up.
_base_ = './lsj-100e_coco-detection.py'

train_dataloader = dict(dataset=dict(times=8))

param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.067, by_epoch=False, begin=0,
        end=1000),
    dict(
        type='MultiStepLR',
        begin=0,
        end=25,
        by_epoch=True,
        milestones=[22, 24],
        gamma=0.1)
]
