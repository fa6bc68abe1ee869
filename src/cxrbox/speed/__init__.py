"""Speed: the training-step benchmark, the speed gate and the inference benchmark."""
