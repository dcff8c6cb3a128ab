"""Pictures of attention: plotting recorded maps, one command for all.

- :mod:`attn2d.capture` (re-exported here): :class:`AttentionRecorder`,
  :class:`FeatureRecorder`;
- :mod:`attn2d.viz.maps`: a query pixel's weights, RCCA's composed map, gate pictures;
- :mod:`attn2d.viz.plots`: one function per picture, each returning a Figure (PNG on
  request);
- :mod:`attn2d.viz.report`: every picture for one image (``attn2d visualize``);
- :func:`explore`: one interactive HTML page of every model's maps (``attn2d explore``).
"""

from __future__ import annotations

from ..modules.capture import (
    AttentionRecorder,
    FeatureRecorder,
    MapRecord,
    attention_maps,
    merge_records,
)
from .comparison import plot_accuracy, plot_curves, plot_tradeoff
from .explorer import explore
from .maps import (
    compose_criss_cross,
    criss_cross_dense,
    criss_cross_query,
    gate_picture,
    key_grid,
    position_query,
)
from .pictures import Example, mechanism_paths, visualize_example
from .plots import (
    plot_affinity_matrix,
    plot_attention_histograms,
    plot_channel_weights,
    plot_feature_grid,
    plot_query_attention,
    plot_spatial_map,
    plot_top_channels,
    plot_training_curves,
    read_metrics,
    save_figure,
)

__all__ = [
    "AttentionRecorder",
    "Example",
    "FeatureRecorder",
    "MapRecord",
    "attention_maps",
    "compose_criss_cross",
    "criss_cross_dense",
    "criss_cross_query",
    "explore",
    "gate_picture",
    "key_grid",
    "mechanism_paths",
    "merge_records",
    "plot_accuracy",
    "plot_affinity_matrix",
    "plot_attention_histograms",
    "plot_channel_weights",
    "plot_curves",
    "plot_feature_grid",
    "plot_query_attention",
    "plot_spatial_map",
    "plot_top_channels",
    "plot_tradeoff",
    "plot_training_curves",
    "position_query",
    "read_metrics",
    "save_figure",
    "visualize_example",
]
