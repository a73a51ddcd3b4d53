(function () {
  "use strict";
  var specs = JSON.parse(document.getElementById("infercmp-figures").textContent);
  var config = {responsive: true, displaylogo: false, modeBarButtonsToRemove: ["lasso2d", "select2d"]};
  var ids = Object.keys(specs);
  ids.forEach(function (id) {
    var spec = specs[id];
    Plotly.newPlot(id, spec.data, spec.layout, config);
  });
  var box = document.getElementById("show-outliers");
  box.addEventListener("change", function () {
    ids.forEach(function (id) {
      var div = document.getElementById(id);
      var idx = [];
      (div.data || []).forEach(function (t, i) { if (t.meta === "outliers") idx.push(i); });
      if (idx.length) Plotly.restyle(div, {visible: box.checked ? true : "legendonly"}, idx);
    });
  });
})();
