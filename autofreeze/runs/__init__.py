"""Work outside a search: preparing a config, pretraining, the final training and the delivered
model (:func:`autofreeze.load`).
"""
