"""NNI's Lightning evaluator as an NNI user writes it, for tests that run NNI 3.0 strategies in-process."""

import torch


def classification():
    """NNI's Lightning evaluator over 8 random 16x16 images: 2 training batches, 1 validation batch, 1 epoch."""
    from nni.nas.evaluator.pytorch import Classification, DataLoader  # nni.trace'd DataLoader
    from torch.utils.data import TensorDataset

    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(8, 3, 16, 16, generator=generator), torch.randint(0, 10, (8,), generator=generator))
    return Classification(
        train_dataloaders=DataLoader(data, batch_size=4),
        val_dataloaders=DataLoader(data, batch_size=4),
        num_classes=10,
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
