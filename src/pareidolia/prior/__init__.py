"""The offline face prior, a product of its own: the face sets it learns from
(:mod:`~pareidolia.prior.facesets`, with the DCGAN faces of :mod:`~pareidolia.prior.dcgan`
mixed in by :mod:`~pareidolia.prior.data`), its network's shape (:mod:`~pareidolia.prior.model`)
and training (:mod:`~pareidolia.prior.config`, :mod:`~pareidolia.prior.train`), its evaluation
(:mod:`~pareidolia.prior.evaluation`) and model card (:mod:`~pareidolia.prior.card`).

The trained network is a score network like any other: its folder format, and the copy shipped
with the package, are :mod:`pareidolia.diffusion.prior`.
"""
