"""Images: dataset types, decoding once to uint8 and its store, tensors (in memory or streamed),
augmentation and dataset options.
"""
