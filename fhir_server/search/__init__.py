"""Search: parsing query criteria and (next milestone) the typed expression tree and its renderers."""
