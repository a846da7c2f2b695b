"""The report's Definitions section: what every number and word of the report means, written
out with the report's own settings (folded away at the end of the page)."""

from __future__ import annotations

from fitscope.report import importance
from fitscope.report.settings import ReportSettings

DEFINITIONS = """\
- **epoch 0**: the network as initialized, before any step: its losses, accuracies and
  diagnostics (gradients from one pass over a fixed training batch). Charts start there; the
  best epoch, early stopping and the fit verdict look at trained epochs (1 on) only.
- **train and validation curves**: each epoch's loss and accuracy of its final weights, in eval
  mode (dropout off). The validation curve covers the whole validation part; the train curve a
  fixed, stratified subset of the training part (`trainer.train_eval_samples`: as many samples
  as the validation part, at least 10,000, so smaller training parts are measured whole), the
  same samples at every epoch and in every run on that split (summary.json's
  `samples.train_eval` says how many).
- **best epoch**: the trained epoch with the lowest validation loss. Every run keeps its weights
  (`best.pt`), and the test columns use them: "best weights kept, test uses epoch 7" in a reason
  says so where the best epoch is not the last.
- **early-stopping epoch**: where early stopping on validation loss would have stopped, with
  patience {patience} and min_delta {min_delta} (`report.patience`, `report.min_delta`): after
  `patience` epochs in a row without a decrease larger than min_delta. *never* when it would
  not have stopped within the epochs run (runs.csv leaves the value empty, the loss chart draws
  no line). `restored_epoch` (runs.csv) is the lowest-loss epoch up to that stop (all epochs
  when it never stops). With min_delta > 0 this can differ from Keras'
  `restore_best_weights`, which restores the last epoch that improved by more than min_delta: an
  epoch that lowered the loss by less than min_delta is restored here and not by Keras. The
  report computes these from the curves; the trainer's own early stopping
  (`trainer.early_stopping`, off by default) is another setting, and each run's summary.json
  records where it stopped or would have stopped the run (`trainer_stop_epoch`).
- **smoothed curve and noise**: validation loss smoothed by a centred moving mean over
  {window} epochs (`report.smooth_window`; at most a fifth of the epochs run, an odd number, so
  a run of fewer than 15 epochs is judged unsmoothed; `val_window` in runs.csv; the loss chart
  draws it). Its noise (`val_noise`) is the standard deviation of independent epoch-to-epoch
  noise around a locally straight trend, estimated from the second half of the curve as
  1.4826 × the median absolute second difference / √6 (the DER_SNR estimator: a steady rise or
  fall adds nothing, a few jumps do not dominate). A rise or fall counts only when larger than
  {k:g} × the noise (`report.noise_tolerance`), so a noisy plateau does not flip a verdict.
- **fit verdict** (diagnosis), judged in this order: *overfit* when the mean validation loss
  of the last `val_window` epochs is at least {rise:.0%} (`report.overfit_rise`) and more than
  the noise tolerance above the smoothed curve's minimum, reached before the last epoch, while
  training loss fell (`val_rise` in runs.csv); *not converged* when the smoothed validation
  loss still fell by more than {tol:.0%} (`report.converge_tol`) and more than the noise
  tolerance over the last {tail:.0%} of the epochs (`report.converge_window`, at least
  `val_window` epochs), or its best epoch is its last and the smoothed curve, lowest there, fell
  by more than the noise tolerance (still improving when training stopped), or the run has fewer
  than 3 epochs: train longer; *underfit* when the
  last training accuracy is below {underfit:.0%} (`report.underfit_train_acc`) and the run no
  longer improves; *good fit* otherwise; *diverged* / *failed* from the run's status.
- **flag**: *stuck at chance* when, over every trained epoch, validation accuracy stayed within
  {margin_pp:g} percentage points of chance (1 / the class count), or validation loss within
  {margin:.0%} of ln(class count) while accuracy stayed within {margin_pp2:g} points
  (`report.chance_margin`), with its most likely cause, the first of: *exploding gradients*
  (the global gradient norm above {exploding:g}, `report.exploding_norm`), *vanishing
  gradients toward the input* (the first layer's gradient RMS below {vanishing:g} of the output
  layer's at epoch 0 or the best epoch, `report.vanishing_ratio`), *collapsed forward signal*
  (at epoch 0 the last hidden layer's signal below {collapse:g} of the first's,
  `report.collapse_ratio`), *dead units*, *saturated units* (a hidden layer with at least
  {share:.0%} of them at the last epoch, `report.unit_share`), *clipped gradients* (clipping
  fired on most steps of an epoch); where both the gradient and the signal rule hold, the one
  with the smaller ratio is named. A run that learns is flagged *exploding gradients* or
  *vanishing gradients* on the same rules; a run that diverged or failed gets no flag (its
  status says what happened). runs.csv's `flag_reason` has the numbers.
- **gradient RMS**: a layer's weight-gradient norm over the square root of its element count
  (per weight), so that layers of different sizes compare, averaged over an epoch's steps
  (eager steps, anything but a CUDA graph: over every k-th step from the first, at most 32 of
  an epoch).
- **signal** of a hidden layer: each unit's std across the samples of a fixed validation batch,
  root-mean-square over the layer's units: how much its output still depends on the input.
  `act_mean`, `act_std`: mean and std over units and samples together.
- **dead unit** (ReLU family): pre-activation ≤ 0 on every sample of a fixed validation batch;
  **saturated output** (sigmoid, tanh): within 0.01 of the activation's bounds (0 or 1; -1 or
  1), as Glorot & Bengio (2010) count saturation.
- **gap**: validation minus training loss at the best epoch. Losses are per-sample mean
  cross-entropy in nats; accuracies are percentages.
- **setup**: the runs that differ only in a replicate key (`trainer.seed`, `data.fold`). Seeds
  and folds are what a setup averages over, never an axis of a chart. Its mean and 95% interval
  over its completed runs: setups.csv.
- **results matrix cell**: the mean of the report's metric ({metric}, `report.metric`) over the
  cell's completed runs, with its 95% interval over their seeds (a cell of one setup) or over its
  setups (a cell that averages several); its mark is the commonest verdict of its runs, with
  how many share it (*overfit 2/3*), left out where every run is a good fit. matrix.csv.
- **key effect**: the metric's mean over the setups with one value of a key (each setup averaged
  over its seeds), with its 95% t-interval over those setups (over the seeds where one setup has
  the value). effects.csv.
- **importance**: a random forest ({trees} trees) learns the metric from the setup keys over the
  setups; a key's permutation importance is how much its squared error on the setups it did not
  train on grows when that key's values are shuffled, as a share of the metric's variance over
  the setups (0: the key explains nothing). The number is the median over {bootstraps}
  bootstrap samples of the setups, the interval their 2.5th to 97.5th percentile. Not estimated
  under {min_setups} setups. **rank correlation**: Spearman's rho between a numeric key and the
  metric over the setups (its sign says which way the metric moves as the key grows), with the
  bootstrap's interval. importance.csv.
- **group curves**: per value of `report.group_by` ({group_by}), the mean of each curve over
  the group's runs at each epoch and a band from its 10th to its 90th percentile, up to the last
  epoch that half of the runs reached; diverged and failed runs are left out. group_curves.csv."""


def definitions(s: ReportSettings, metric: str, group_by: str | None) -> str:
    """The Definitions section as Markdown, with this report's settings."""
    return DEFINITIONS.format(
        patience=s.patience,
        min_delta=s.min_delta,
        window=s.smooth_window,
        tail=s.converge_window,
        k=s.noise_tolerance,
        underfit=s.underfit_train_acc,
        tol=s.converge_tol,
        rise=s.overfit_rise,
        margin=s.chance_margin,
        margin_pp=100 * s.chance_margin,
        margin_pp2=200 * s.chance_margin,
        vanishing=s.vanishing_ratio,
        collapse=s.collapse_ratio,
        share=s.unit_share,
        exploding=s.exploding_norm,
        metric=metric,
        trees=importance.TREES,
        bootstraps=importance.BOOTSTRAPS,
        min_setups=importance.MIN_SETUPS,
        group_by=group_by or "none: every run is one group",
    )
