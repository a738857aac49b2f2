"""``register_all_modules``: mmdetection's first call, in a fresh
interpreter (nothing of detkit imported before it)."""
import subprocess
import sys

from conftest import REPO_ROOT, require_shared

CHILD = '''
import sys, warnings
from detkit.utils import register_all_modules
from detkit.registry import MODELS, TRANSFORMS, METRICS, HOOKS, TASK_UTILS
from mmengine.registry import DefaultScope
assert 'detkit.models' not in sys.modules, 'imported before the call'
assert DefaultScope.get_current_instance() is None
{body}
'''


def _run(body):
    proc = subprocess.run(
        [sys.executable, '-c', CHILD.format(body=body)], cwd=REPO_ROOT,
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_registers_everything_and_sets_the_scope():
    config = require_shared('reference', 'mmdet-3.3.0', 'configs',
                            'retinanet', 'retinanet_r18_fpn_1x_coco.py')
    keys = require_shared('compat', 'configs', 'retinanet',
                          'retinanet_r18_fpn_1x_coco.txt')
    out = _run(f'''
register_all_modules()
assert DefaultScope.get_current_instance().scope_name == 'detkit'
# registered by the call itself, before anything is built
assert {{'RetinaNet', 'FasterRCNN', 'RPN', 'SSD', 'DetTTAModel'}} <= set(
    MODELS.module_dict)
assert {{'PackDetInputs', 'TestTimeAug'}} <= set(TRANSFORMS.module_dict)
assert 'CocoMetric' in METRICS.module_dict
assert 'NumClassCheckHook' in HOOKS.module_dict
assert 'MaxIoUAssigner' in TASK_UTILS.module_dict
from mmengine.config import Config
cfg = Config.fromfile({config!r})
model = MODELS.build(cfg.model)
keys = [l.split('\\t')[0] for l in open({keys!r}) if not l.startswith('#')]
assert list(model.state_dict()) == keys
print(type(model).__name__, len(keys))
''')
    assert out.split() == ['RetinaNet', '156']


def test_scope_only_when_asked_and_an_existing_scope_overridden():
    out = _run('''
register_all_modules(init_default_scope=False)
assert DefaultScope.get_current_instance() is None
assert {'RetinaNet', 'FasterRCNN'} <= set(MODELS.module_dict)
DefaultScope.get_instance('user', scope_name='mmengine')
register_all_modules()  # no detkit instance yet: one is made current
assert DefaultScope.get_current_instance().scope_name == 'detkit'
DefaultScope.get_instance('later', scope_name='mmengine')
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    register_all_modules()
current = DefaultScope.get_current_instance()
assert current.scope_name == 'detkit'
assert current.instance_name.startswith('detkit-'), current.instance_name
print([str(w.message) for w in caught])
register_all_modules()  # already detkit: nothing to say
''')
    assert "The current default scope is 'mmengine'" in out
