"""Training: recipes, the shared loop, the four methods (slim, pareco, twostage, independent),
resumable runs and the pipeline behind ``python -m pareco.train``.

Modules, one job each: :mod:`~pareco.training.recipe` (YAML recipes),
:mod:`~pareco.training.optim` (SGD and the schedule), :mod:`~pareco.training.losses`,
:mod:`~pareco.training.methods` (which configurations each step trains),
:mod:`~pareco.training.history_eval` (PareCO's H re-evaluation), :mod:`~pareco.training.posthoc`
(TwoStage's search), :mod:`~pareco.training.loop` (the step and epoch loop),
:mod:`~pareco.training.checkpoint` (atomic resume state), :mod:`~pareco.training.log`,
:mod:`~pareco.training.run` (one resumable run) and :mod:`~pareco.training.pipeline`.
"""
