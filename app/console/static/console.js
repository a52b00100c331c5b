// The console's few behaviours: show the chosen method's parameters, follow a running
// forget request, and the "try it" drawing pad. No framework, no build step; the pages
// work without it except for the drawing pad.
"use strict";

(function methodParams() {
  const select = document.getElementById("method-select");
  if (!select) return;
  const show = () => {
    document.querySelectorAll(".method-params").forEach((block) => {
      const active = block.dataset.method === select.value;
      block.hidden = !active;
      block.querySelectorAll("input").forEach((input) => { input.disabled = !active; });
    });
  };
  select.addEventListener("change", show);
  show();
})();

(function followRequest() {
  const box = document.getElementById("request-status");
  if (!box || box.dataset.finished === "true") return;
  const url = `/console/forget-requests/${box.dataset.requestId}/status`;
  const text = document.getElementById("status-text");
  const bar = document.getElementById("status-progress");
  const phase = document.getElementById("status-phase");
  const poll = async () => {
    try {
      const response = await fetch(url, { credentials: "same-origin", cache: "no-store" });
      if (response.ok) {
        const state = await response.json();
        text.textContent = state.status;
        text.className = `status ${state.status}`;
        bar.value = state.progress;
        phase.textContent = state.phase || "";
        if (state.finished) { window.location.reload(); return; }
      }
    } catch (error) { /* the server restarted or the network blinked: keep polling */ }
    window.setTimeout(poll, 500);
  };
  window.setTimeout(poll, 300);
})();

(function tryIt() {
  const root = document.getElementById("try");
  if (!root) return;
  const pad = document.getElementById("pad");
  const preview = document.getElementById("preview");
  const context = pad.getContext("2d");
  const errorBox = document.getElementById("try-error");
  let drawing = false;
  let last = null;

  const clear = () => {
    context.fillStyle = "#000";
    context.fillRect(0, 0, pad.width, pad.height);
    preview.getContext("2d").clearRect(0, 0, 28, 28);
  };
  clear();
  context.lineCap = "round";
  context.lineJoin = "round";
  context.strokeStyle = "#fff";
  context.lineWidth = 22;

  const point = (event) => {
    const box = pad.getBoundingClientRect();
    return { x: (event.clientX - box.left) * (pad.width / box.width),
             y: (event.clientY - box.top) * (pad.height / box.height) };
  };
  pad.addEventListener("pointerdown", (event) => {
    drawing = true; last = point(event); pad.setPointerCapture(event.pointerId);
    context.beginPath(); context.moveTo(last.x, last.y); context.lineTo(last.x + 0.1, last.y);
    context.stroke();
  });
  pad.addEventListener("pointermove", (event) => {
    if (!drawing) return;
    const next = point(event);
    context.beginPath(); context.moveTo(last.x, last.y); context.lineTo(next.x, next.y);
    context.stroke(); last = next;
  });
  const stop = () => { if (drawing) { drawing = false; predict(); } };
  pad.addEventListener("pointerup", stop);
  pad.addEventListener("pointercancel", stop);
  document.getElementById("clear").addEventListener("click", clear);
  document.getElementById("predict").addEventListener("click", () => predict());
  ["left", "right"].forEach((side) =>
    document.getElementById(`version-${side}`).addEventListener("change", () => predict()));

  document.getElementById("upload").addEventListener("change", (event) => {
    const file = event.target.files[0];
    if (!file) return;
    const image = new Image();
    image.onload = () => {
      clear();
      context.drawImage(image, 0, 0, pad.width, pad.height);
      // MNIST digits are light on dark: invert a dark-on-light picture.
      const pixels = context.getImageData(0, 0, pad.width, pad.height);
      let sum = 0;
      for (let i = 0; i < pixels.data.length; i += 4) sum += pixels.data[i];
      if (sum / (pixels.data.length / 4) > 127) {
        for (let i = 0; i < pixels.data.length; i += 4) {
          for (let c = 0; c < 3; c += 1) pixels.data[i + c] = 255 - pixels.data[i + c];
        }
        context.putImageData(pixels, 0, 0);
      }
      predict();
    };
    // A data: URL, because the page's Content-Security-Policy admits no blob: images.
    const reader = new FileReader();
    reader.onload = () => { image.src = reader.result; };
    reader.readAsDataURL(file);
  });

  // MNIST's own preprocessing: fit the digit's bounding box into 20x20, then place it in
  // a 28x28 frame so that its centre of mass is at the centre.
  const toMnist = () => {
    const { width, height } = pad;
    const pixels = context.getImageData(0, 0, width, height).data;
    let top = height, left = width, bottom = -1, right = -1;
    for (let y = 0; y < height; y += 1) {
      for (let x = 0; x < width; x += 1) {
        if (pixels[(y * width + x) * 4] > 30) {
          if (y < top) top = y; if (y > bottom) bottom = y;
          if (x < left) left = x; if (x > right) right = x;
        }
      }
    }
    if (bottom < 0) return null;
    const boxWidth = right - left + 1, boxHeight = bottom - top + 1;
    const scale = 20 / Math.max(boxWidth, boxHeight);
    const fitted = document.createElement("canvas");
    fitted.width = 28; fitted.height = 28;
    const fittedContext = fitted.getContext("2d");
    fittedContext.fillStyle = "#000"; fittedContext.fillRect(0, 0, 28, 28);
    fittedContext.imageSmoothingQuality = "high";
    const w = boxWidth * scale, h = boxHeight * scale;
    fittedContext.drawImage(pad, left, top, boxWidth, boxHeight, (28 - w) / 2, (28 - h) / 2, w, h);
    const small = fittedContext.getImageData(0, 0, 28, 28).data;
    let mass = 0, mx = 0, my = 0;
    for (let y = 0; y < 28; y += 1) {
      for (let x = 0; x < 28; x += 1) {
        const v = small[(y * 28 + x) * 4];
        mass += v; mx += v * x; my += v * y;
      }
    }
    const shiftX = Math.round(13.5 - mx / mass), shiftY = Math.round(13.5 - my / mass);
    const previewContext = preview.getContext("2d");
    previewContext.fillStyle = "#000"; previewContext.fillRect(0, 0, 28, 28);
    previewContext.drawImage(fitted, shiftX, shiftY);
    const centred = previewContext.getImageData(0, 0, 28, 28).data;
    const instance = [];
    for (let y = 0; y < 28; y += 1) {
      const row = [];
      for (let x = 0; x < 28; x += 1) row.push(centred[(y * 28 + x) * 4] / 255);
      instance.push(row);
    }
    return instance;
  };

  const show = (side, answer) => {
    const card = document.getElementById(`answer-${side}`);
    card.querySelector(".predicted").textContent = String(answer.label);
    card.dataset.label = String(answer.label);
    card.querySelectorAll("tr[data-class]").forEach((row) => {
      const p = answer.probabilities[Number(row.dataset.class)];
      row.querySelector(".bar").style.width = `${Math.round(p * 140)}px`;
      row.querySelector(".value").textContent = `${(100 * p).toFixed(1)}%`;
      row.classList.toggle("top", Number(row.dataset.class) === answer.label);
    });
  };

  const predict = async () => {
    const instance = toMnist();
    if (!instance) return;
    const versions = ["left", "right"].map((side) =>
      Number(document.getElementById(`version-${side}`).value));
    errorBox.hidden = true;
    try {
      const response = await fetch("/console/try/predict", {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": root.dataset.csrf },
        body: JSON.stringify({ versions, instances: [instance] }),
      });
      const body = await response.json();
      if (!response.ok) throw new Error(body.error ? body.error.message : response.statusText);
      show("left", body.predictions[0]);
      show("right", body.predictions[1] || body.predictions[0]);
      root.dataset.predicted = "true";
    } catch (error) {
      errorBox.textContent = `Prediction failed: ${error.message}`;
      errorBox.hidden = false;
    }
  };
})();
