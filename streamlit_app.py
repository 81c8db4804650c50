"""dermai workbench: navigation and the shared sidebar only; each page lives in pages/."""

from __future__ import annotations

import streamlit as st

from pages._common import sidebar

st.set_page_config(page_title="dermai", page_icon="🔬", layout="wide")
navigation = st.navigation(
    [
        st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
        st.Page("pages/dataset.py", title="Dataset browser", icon=":material/photo_library:"),
        st.Page("pages/augmentation.py", title="Augmentation lab", icon=":material/auto_fix_high:"),
        st.Page("pages/training.py", title="Training", icon=":material/model_training:"),
        st.Page("pages/predict.py", title="Predict", icon=":material/biotech:"),
        st.Page("pages/evaluation.py", title="Evaluation", icon=":material/analytics:"),
    ]
)
sidebar()
navigation.run()
