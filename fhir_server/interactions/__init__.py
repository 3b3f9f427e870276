"""REST interactions of the FHIR API, one module each; :mod:`fhir_server.routing` maps requests onto them."""
