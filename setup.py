"""detkit: a registry-based object-detection toolbox in the style of mmdetection.

Pure Python: ``pip install -e .`` compiles nothing.
"""
import os.path as osp

from setuptools import find_packages, setup

HERE = osp.dirname(osp.abspath(__file__))


def read_requirements(name):
    """Read ``requirements/<name>.txt``, skipping comments and blank lines."""
    with open(osp.join(HERE, 'requirements', f'{name}.txt')) as f:
        lines = (line.split('#')[0].strip() for line in f)
        return [line for line in lines if line]


def read_version():
    scope = {}
    with open(osp.join(HERE, 'detkit', 'version.py')) as f:
        exec(f.read(), scope)
    return scope['__version__']


setup(
    name='detkit',
    version=read_version(),
    description='Modular object detection toolbox on mmengine, '
    'compatible with mmdetection configs and checkpoints',
    long_description=open(osp.join(HERE, 'README.md')).read()
    if osp.exists(osp.join(HERE, 'README.md')) else '',
    long_description_content_type='text/markdown',
    packages=find_packages(exclude=('tests', 'tests.*', 'configs', 'tools')),
    python_requires='>=3.9',
    install_requires=read_requirements('runtime'),
    extras_require=dict(
        tests=read_requirements('tests'),
        optional=read_requirements('optional')),
    zip_safe=False,
)
