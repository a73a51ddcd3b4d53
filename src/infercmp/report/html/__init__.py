"""The HTML report: one offline page of tables and plotly charts from one or more runs."""
