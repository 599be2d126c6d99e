"""Downstream studies of synthetic defects (the paper's "Defect inspection analysis", Table 4,
and a segmentation study of the generated masks).

``splits``      the seeded 60/20/20 defect-free split and the two protocols (clean, paper)
``cutpaste``    the non-learned baseline: real training defects pasted with their masks
``data``        images at one resolution path, labelled tensors, a class-balanced DataModule
``sources``     synthetic sets: generated from a checkpoint, read from a folder, cut-paste
``classifier``  torchvision ResNet-18 / DenseNet-121 with a 1-logit head (LightningModule)
``segmenter``   a small U-Net (LightningModule)
``metrics``     torchmetrics-based classification and pixel metrics, mean ± std over seeds,
                pooled over seeds with image-resampling intervals
``real``        real-defect rows (reference, real + synthetic, fewer real defects), the leak
                guard, the real-vs-synthetic curve
``cache``       cached results keyed by the settings that produced them
``study``       the jobs behind ``src/inspection.py`` and ``src/segmentation.py``
"""
