"""The baselines of Table 2, each a :class:`~defectsynth.models.base.GANModule` trained on the
same batches, synthesised by the same ``src/generate.py`` and measured by ``src/evaluate.py``.

=============  ================================  =====================================
``model=``     class                             output
=============  ================================  =====================================
``cyclegan4``  :class:`.cyclegan4.CycleGAN4`     image + mask (4th generator channel)
``dcgan4``     :class:`.dcgan4.DCGAN4`           image + mask sampled from a latent code
``cut``        :class:`.cut.CUT`                 image only
``fastcut``    :class:`.cut.CUT` (options)       image only
``negcut``     :class:`.cut.NegCUT`              image only
=============  ================================  =====================================
"""
