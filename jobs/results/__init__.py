"""Reading results: scoring stored records, judge labels, comparisons with the reference, console
tables, the HTML report, plots and colours."""
