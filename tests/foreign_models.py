"""Models as other frameworks train them, for the import tests: a small PyTorch CNN, images, a churn table and a
scikit-learn pipeline over its numeric and categorical columns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler


class SmallCNN(torch.nn.Module):
    """A real (if small) image classifier: conv, batch norm, pooling, a linear head of 4 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.norm = torch.nn.BatchNorm2d(8)
        self.head = torch.nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.norm(self.conv(x)))
        return self.head(torch.nn.functional.adaptive_avg_pool2d(x, 1).flatten(1))


def small_cnn() -> SmallCNN:
    torch.manual_seed(0)
    net = SmallCNN()
    with torch.no_grad():  # running statistics that are not the identity, as a trained network has
        net.norm.running_mean.uniform_(-0.2, 0.2)
        net.norm.running_var.uniform_(0.5, 2.0)
    return net.eval()


def images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 3, 16, 16), dtype=np.float32)


def churn_table(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"age": rng.normal(40, 10, n), "hours": rng.integers(1, 80, n).astype(float),
                       "city": rng.choice(["lyon", "oslo", "rome"], n), "plan": rng.choice(["basic", "pro"], n)})
    df.loc[::17, "age"] = np.nan
    score = (df.age.fillna(40) - 40) / 10 + (df.city == "oslo") * 1.5 - (df.plan == "pro") + rng.normal(0, 0.5, n)
    df["churn"] = np.where(score > 0, "yes", "no")
    return df


def churn_pipeline(train: pd.DataFrame) -> Pipeline:
    columns = ColumnTransformer([
        ("num", Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler())]), ["age", "hours"]),
        ("cat", OneHotEncoder(handle_unknown="ignore"), ["city", "plan"])])
    return Pipeline([("columns", columns), ("model", LogisticRegression(max_iter=500))]).fit(
        train.drop(columns="churn"), train.churn)
