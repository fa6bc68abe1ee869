"""The network and its loss: the model, grid decode, target assignment and the box losses."""
