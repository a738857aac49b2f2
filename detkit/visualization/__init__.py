"""Drawing detections: the visualizer and its hook."""
from .local_visualizer import DetLocalVisualizer
from .palette import get_palette
from .vis_hook import DetVisualizationHook

__all__ = ['DetLocalVisualizer', 'DetVisualizationHook', 'get_palette']
