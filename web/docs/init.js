// Starts Swagger UI on kassa's documentation page (web/docs/index.html, served at /docs by
// src/api/docs_ui.c) with kassa's OpenAPI document. A file of its own rather than an inline
// script, because the page's Content-Security-Policy allows scripts from 'self' only.
"use strict";

window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/v2/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    // Never send the document to an outside validator: kassa's page talks to kassa only.
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    // "Try it out" calls the listener that served this page.
    tryItOutEnabled: false,
    persistAuthorization: false
  });
});
