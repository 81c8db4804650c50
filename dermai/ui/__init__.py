"""The page-facing helpers behind the Streamlit pages, one module per job: the words, tables and session state
the pages lay out. They call the core (dermai.*) and hold no ML logic, so all of them can be tested without Streamlit.
"""
