// Start Swagger UI on /openapi.json. Kept out of docs.html: the page's CSP allows no inline
// script. The bundle comes from this server (/static), never from a CDN.
/* global SwaggerUIBundle */
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
  showExtensions: true,
  tryItOutEnabled: false,
});
