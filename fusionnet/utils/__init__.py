"""``fusionnet.utils``: PyTorch's ``torch.utils`` helpers that training code imports
(``fusionnet.utils.data``: datasets and the ``DataLoader``)."""
from . import data

__all__ = ["data"]
