"""The one command line: ``inspect-app``.

Heavy imports (torch, the web stack) happen inside the commands so that
``inspect-app users add`` stays quick.
"""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True, help="Human-in-the-loop visual inspection of phones.")
data_app = typer.Typer(no_args_is_help=True, help="Synthetic line-camera data.")
app.add_typer(data_app, name="data")


@data_app.command("generate")
def data_generate(
    out: Path = typer.Option(..., help="Folder to write (one sub-folder per class + manifest.csv)"),
    n: int = typer.Option(1000, help="Number of images"),
    seed: int = typer.Option(0, help="Seed; the same seed gives the same images"),
) -> None:
    """Generate line-camera photos of phones with labeled defects."""
    from data.synth import generate_dataset

    generate_dataset(out, n=n, seed=seed, progress=True)


@app.command()
def train(
    data: Path = typer.Option(..., help="Dataset folder (class folders or manifest.csv)"),
    out: Path = typer.Option(..., help="Checkpoint file to write"),
    epochs: int = typer.Option(30, help="Maximum epochs (early stopping may end sooner)"),
    seed: int = typer.Option(0, help="Training seed"),
) -> None:
    """Train the defect CNN from scratch, calibrate it, and write checkpoint + model card."""
    from models.train import TrainConfig, train_model

    train_model(TrainConfig(data=data, out=out, epochs=epochs, seed=seed), progress=True)


@app.command()
def batch(
    input: Path = typer.Option(..., help="Folder of images (searched recursively)"),
    output: Path = typer.Option(Path("results.csv"), help="CSV to write, one row per file"),
    checkpoint: Path | None = typer.Option(None, help="Checkpoint (default: bundled weights)"),
) -> None:
    """Run every image in a folder through the model; unreadable files get an error row."""
    from models.batch import run_batch_inspection

    run_batch_inspection(input, output, checkpoint=checkpoint, progress=True)


if __name__ == "__main__":
    app()
