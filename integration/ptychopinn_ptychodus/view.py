"""Qt settings panel for the PtychoPINN reconstructors (needs PyQt5; GUI only).

Built with Ptychodus's own ``ParameterViewBuilder``, so every widget is bound to a
parameter of the PtychoPINN settings groups: editing a widget changes the setting and
opening a settings file updates the widgets.
"""

from __future__ import annotations

from ptychodus.controller.data import FileDialogFactory
from ptychodus.controller.parameters import (
    ParameterViewBuilder,
    PowerTwoSpinBoxParameterViewController,
)
from ptychodus.controller.processing import ReconstructorViewControllerFactory
from PyQt5.QtWidgets import QWidget

from .library import LIBRARY_NAME, PtychoPINNReconstructorLibrary
from .settings import (
    ACCELERATORS,
    AMP_ACTIVATIONS,
    BAD_PIXEL_MODES,
    CHECKPOINT_MODES,
    GENERATORS,
    LOGGERS,
    LOSS_MODES,
    PRECISIONS,
    SCHEDULERS,
    STITCH_WEIGHTINGS,
    STRATEGIES,
)

__all__ = ['PANEL_OBJECT_NAME_PREFIX', 'PtychoPINNViewControllerFactory']

PANEL_OBJECT_NAME_PREFIX = 'PtychoPINNSettingsPanel'
"""Each panel's Qt objectName is this prefix + '_' + reconstructor name."""


class PtychoPINNViewControllerFactory(ReconstructorViewControllerFactory):
    """Builds the settings panel Ptychodus shows under the algorithm selector."""

    def __init__(
        self,
        model: PtychoPINNReconstructorLibrary,
        file_dialog_factory: FileDialogFactory | None = None,
    ) -> None:
        super().__init__()
        self._model = model
        self._file_dialog_factory = file_dialog_factory

    @property
    def name(self) -> str:
        return LIBRARY_NAME

    def create_view_controller(self, reconstructor_name: str) -> QWidget:
        is_pinn = reconstructor_name.casefold() == 'pinn'
        settings = self._model.settings
        builder = ParameterViewBuilder(self._file_dialog_factory)

        group = 'Model'
        m = settings.model
        builder.add_spin_box(
            m.gridsize, 'Grid Size:', tool_tip='gridsize**2 neighbouring patterns per group',
            group=group,
        )
        builder.add_spin_box(
            m.n_filters_scale, 'Filter Scale:', tool_tip='Multiplies every convolution width',
            group=group,
        )
        builder.add_combo_box(m.generator, GENERATORS, 'Network:', group=group)
        builder.add_combo_box(m.amp_activation, AMP_ACTIVATIONS, 'Amplitude Activation:',
                              group=group)
        builder.add_check_box(
            m.object_big, 'Object Big', tool_tip='Merge the patches of a group into one object',
            group=group,
        )
        builder.add_check_box(
            m.probe_big, 'Probe Big', tool_tip='Predict the region outside the central N/2',
            group=group,
        )
        builder.add_check_box(m.probe_mask, 'Probe Mask', tool_tip='Circular mask on the probe',
                              group=group)
        builder.add_check_box(
            m.pad_object, 'Pad Object',
            tool_tip='Predict the central N/2 region and zero-pad it', group=group,
        )
        builder.add_decimal_line_edit(m.probe_scale, 'Probe Scale:', group=group)
        builder.add_decimal_line_edit(
            m.gaussian_smoothing_sigma, 'Smoothing Sigma [px]:',
            tool_tip='Gaussian smoothing of the predicted object (0 = off)', group=group,
        )

        group = 'Training'
        t = settings.training
        builder.add_spin_box(t.nepochs, 'Epochs:', group=group)
        builder.add_view_controller(
            PowerTwoSpinBoxParameterViewController(t.batch_size), 'Batch Size:', group=group
        )
        builder.add_spin_box(
            t.n_groups, 'Groups:', tool_tip='Groups drawn per epoch (0 = one per position)',
            group=group,
        )
        builder.add_spin_box(
            t.neighbor_count, 'Neighbours:',
            tool_tip='A group is drawn from this many nearest positions (>= gridsize**2)',
            group=group,
        )
        builder.add_decimal_line_edit(
            t.validation_fraction, 'Validation Fraction:',
            tool_tip='Share of groups held out when there is no test_data.npz', group=group,
        )
        builder.add_spin_box(
            t.subsample_seed, 'Sampling Seed:', tool_tip='-1 = unseeded', group=group
        )
        builder.add_check_box(t.sequential_sampling, 'Sequential Sampling', group=group)

        if is_pinn:
            builder.add_combo_box(t.loss_mode, LOSS_MODES, 'Loss:', group=group)
            builder.add_decimal_line_edit(t.nll_weight, 'Poisson NLL Weight:', group=group)
            builder.add_decimal_line_edit(t.mae_weight, 'Amplitude MAE Weight:', group=group)
            builder.add_decimal_line_edit(
                t.realspace_weight, 'Real-Space Weight:',
                tool_tip='Weight of the real-space term (needs labels)', group=group,
            )
            builder.add_decimal_line_edit(
                t.realspace_mae_weight, 'Real-Space MAE Weight:', group=group
            )
            builder.add_decimal_line_edit(
                t.nphotons, 'Photons per Pattern:', tool_tip='0 = measured from the data',
                group=group,
            )
            builder.add_check_box(t.probe_trainable, 'Probe Trainable', group=group)
            builder.add_check_box(
                t.intensity_scale_trainable, 'Intensity Scale Trainable', group=group
            )

        group = 'Inference'
        i = settings.inference
        builder.add_spin_box(
            i.n_groups, 'Groups:', tool_tip='0 = one group per scan position', group=group
        )
        builder.add_combo_box(i.stitch_weighting, STITCH_WEIGHTINGS, 'Stitch Weighting:',
                              group=group)
        builder.add_spin_box(
            i.stitch_crop_px, 'Stitch Crop [px]:',
            tool_tip='Central region kept per patch (0 = N/2)', group=group,
        )
        builder.add_check_box(i.stitch_align_phase, 'Align Patch Phases', group=group)
        builder.add_check_box(i.flip_x, 'Flip X', group=group)
        builder.add_check_box(i.flip_y, 'Flip Y', group=group)
        builder.add_check_box(i.transpose, 'Transpose', group=group)
        builder.add_combo_box(
            i.bad_pixel_mode, BAD_PIXEL_MODES, 'Bad Pixels:',
            tool_tip='Repair of masked detector pixels (also for Export Training Data)',
            group=group,
        )

        group = 'Execution'
        e = settings.execution
        builder.add_combo_box(e.accelerator, ACCELERATORS, 'Accelerator:', group=group)
        builder.add_line_edit(
            e.devices, 'Devices:', tool_tip='Device count, or auto', group=group
        )
        builder.add_combo_box(e.strategy, STRATEGIES, 'Strategy:', group=group)
        builder.add_combo_box(e.precision, PRECISIONS, 'Precision:', group=group)
        builder.add_check_box(e.deterministic, 'Deterministic', group=group)
        builder.add_decimal_line_edit(e.learning_rate, 'Learning Rate:', group=group)
        builder.add_combo_box(e.scheduler, SCHEDULERS, 'Scheduler:', group=group)
        builder.add_decimal_line_edit(
            e.gradient_clip_val, 'Gradient Clip:', tool_tip='0 = off', group=group
        )
        builder.add_spin_box(e.accumulate_grad_batches, 'Accumulate Batches:', group=group)
        builder.add_spin_box(
            e.early_stop_patience, 'Early Stop Patience:', tool_tip='Epochs; 0 = off',
            group=group,
        )
        builder.add_spin_box(e.num_workers, 'Data Workers:', group=group)
        builder.add_spin_box(
            e.inference_batch_size, 'Inference Batch Size:',
            tool_tip='0 = the training batch size', group=group,
        )
        builder.add_check_box(e.enable_checkpointing, 'Checkpoints', group=group)
        builder.add_line_edit(e.checkpoint_monitor, 'Checkpoint Metric:', group=group)
        builder.add_combo_box(e.checkpoint_mode, CHECKPOINT_MODES, 'Checkpoint Mode:',
                              group=group)
        builder.add_combo_box(e.logger, LOGGERS, 'Logger:', group=group)
        builder.add_spin_box(e.seed, 'Seed:', group=group)

        widget = builder.build_widget()
        widget.setObjectName(f'{PANEL_OBJECT_NAME_PREFIX}_{reconstructor_name}')
        return widget
