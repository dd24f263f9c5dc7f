"""Real-image experiments (PAPER_NOTES §7.2, §7.3 B): a ResNet grown block by block and trained
with the paper's protocols (``e2e``, ``layerwise``, ``window:k``, ``bfc``).

Modules, each with one job:

* :mod:`.config`     the typed run config and per-dataset presets;
* :mod:`.data`       mnist1d, scikit-learn digits and local CIFAR-10/100 pickles;
* :mod:`.augment`    random crop with padding and horizontal flip, in torch;
* :mod:`.resnet`     the 1-D/2-D ResNet whose residual blocks are the growth stages;
* :mod:`.run`        one training run through :mod:`bfclab.probe` (protocols, probes, revert test);
* :mod:`.summary`    Markdown tables from stored result files;
* :mod:`.figures`    figures drawn from stored result files.
"""
