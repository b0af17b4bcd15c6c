"""Synthetic tables for tests: every column kind, missing values, a learnable target."""

from __future__ import annotations

import numpy as np
import pandas as pd


def mixed_frame(n: int = 600, *, task: str = "binary", seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = rng.normal(40, 12, n).round(1)
    income = rng.lognormal(10, 0.5, n)
    income[rng.random(n) < 0.1] = np.nan
    city = rng.choice(["paris", "lyon", "nice", "lille", "brest"], n, p=[0.4, 0.25, 0.15, 0.1, 0.1]).astype(object)
    city[rng.random(n) < 0.05] = None
    member = rng.random(n) < 0.3
    signup = pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 1000, n), unit="D")
    score = 0.05 * (age - 40) + np.nan_to_num(np.log(income) - 10) + np.where(city == "paris", 1.0, -0.3) + member
    score = score + rng.normal(0, 0.5, n)
    frame = pd.DataFrame({
        "customer_id": np.arange(1000, 1000 + n),
        "age": age,
        "income": income,
        "city": city,
        "member": member,
        "signup": signup.strftime("%Y-%m-%d"),
    })
    if task == "binary":
        frame["churn"] = np.where(score > 0.3, "yes", "no")
    elif task == "multiclass":
        frame["churn"] = np.select([score < -0.3, score < 0.8], ["low", "mid"], "high")
    else:
        frame["churn"] = score * 10 + 50
    return frame
