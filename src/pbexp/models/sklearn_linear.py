"""What a practitioner tries first on text classification: scikit-learn's bag of n-grams and a logistic
regression, run by the same ``pbexp-train`` command and evaluated by the same task code as our models.

Two weightings of the binarised word n-gram counts (n = 1..ngrams):
* ``nb``: each feature scaled by its naive-Bayes log-count ratio (Wang & Manning 2012's NB-LR; two classes);
* ``tfidf``: sublinear tf-idf, L2-normalised rows.
It trains itself (liblinear, one thread; see ``self_trained``) and reads the dataset's tokens.
"""

from __future__ import annotations

import logging
import os
import pickle

import numpy as np
import torch

from pbexp.checks import check_choice, check_int, check_number
from pbexp.errors import ConfigError
from pbexp.models.self_trained import SelfTrainedModel

log = logging.getLogger(__name__)
WEIGHTINGS = ("nb", "tfidf")


class SklearnLinear(SelfTrainedModel):
    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        max_len: int,
        pad_idx: int = 0,
        *,  # defaults: configs/model/sklearn_linear.yaml
        weighting: str,
        ngrams: int,
        min_df: int,
        C: float,
        alpha: float,
    ):
        check_choice("model.weighting", weighting, WEIGHTINGS)
        if weighting == "nb" and num_classes != 2:
            raise ConfigError(
                "model.weighting", weighting, f"tfidf: nb ratios need 2 classes, the data has {num_classes}"
            )
        check_int("model.ngrams", ngrams)
        check_int("model.min_df", min_df)
        check_number("model.C", C, 0, low_open=True)
        check_number("model.alpha", alpha, 0, low_open=True)
        super().__init__(num_classes, pad_idx)
        self.weighting, self.ngrams, self.min_df, self.C, self.alpha = weighting, ngrams, min_df, C, alpha
        self.vectorizer = self.classifier = self.ratio = None

    def features(self, x: torch.Tensor):
        out = self.vectorizer.transform(self.lines(x))
        return out.multiply(self.ratio).tocsr() if self.ratio is not None else out

    def fit(self, task, run_dir: str | os.PathLike) -> None:
        from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        self.itos = task.data.vocab.itos
        x, y = task.splits["train"]
        # The dataset already tokenised: a token is whatever lies between spaces, case kept.
        common = dict(
            token_pattern=r"\S+", lowercase=False, ngram_range=(1, self.ngrams), min_df=self.min_df, dtype=np.float32
        )
        self.vectorizer = (
            CountVectorizer(binary=True, **common)
            if self.weighting == "nb"
            else TfidfVectorizer(sublinear_tf=True, **common)
        )
        features, labels = self.vectorizer.fit_transform(self.lines(x)), y.numpy()
        if self.weighting == "nb":
            p = np.asarray(features[labels == 1].sum(0)).ravel() + self.alpha
            q = np.asarray(features[labels == 0].sum(0)).ravel() + self.alpha
            self.ratio = (np.log(p / p.sum()) - np.log(q / q.sum())).astype(np.float32)
            features = features.multiply(self.ratio).tocsr()
        log.info(
            "scikit-learn: %s-weighted 1..%d-grams, %d features, LogisticRegression(C=%g) on %d examples",
            self.weighting,
            self.ngrams,
            features.shape[1],
            self.C,
            len(labels),
        )
        # dual liblinear: the fast solver when features outnumber examples, as here
        self.classifier = LogisticRegression(C=self.C, solver="liblinear", dual=True, max_iter=1000)
        self.classifier.fit(features, labels)
        with open(self.artifact(run_dir, "sklearn.pkl"), "wb") as f:
            pickle.dump({"vectorizer": self.vectorizer, "ratio": self.ratio, "classifier": self.classifier}, f)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Log-probabilities of each class, [B, num_classes], in class-index order."""
        logp = self.classifier.predict_log_proba(self.features(x))
        out = torch.full((len(x), self.num_classes), -1e9)
        out[:, torch.as_tensor(self.classifier.classes_)] = torch.as_tensor(logp, dtype=torch.float32)
        return out
