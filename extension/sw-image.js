// Getting the query image: read it in the page with the access the user's click grants
// (activeTab + scripting), or capture the visible tab and crop. Everything is downscaled here,
// in the browser, to a JPEG whose longest side is at most 512 px: the server never fetches URLs.
export const MAX_SIDE = 512;
const JPEG_QUALITY = 0.88;

export class ImageError extends Error {
  constructor(message) {
    super(message);
    this.kind = "image";
  }
}

/** Draws a bitmap (optionally a crop of it) into a JPEG blob, longest side <= MAX_SIDE. */
export async function toJpeg(bitmap, crop = null) {
  const sx = crop ? crop.x : 0;
  const sy = crop ? crop.y : 0;
  const sw = crop ? crop.w : bitmap.width;
  const sh = crop ? crop.h : bitmap.height;
  const scale = Math.min(1, MAX_SIDE / Math.max(sw, sh));
  const w = Math.max(1, Math.round(sw * scale));
  const h = Math.max(1, Math.round(sh * scale));
  const canvas = new OffscreenCanvas(w, h);
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff"; // transparent PNGs become white, not black
  ctx.fillRect(0, 0, w, h);
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(bitmap, sx, sy, sw, sh, 0, 0, w, h);
  return canvas.convertToBlob({ type: "image/jpeg", quality: JPEG_QUALITY });
}

export async function blobToDataUrl(blob) {
  const bytes = new Uint8Array(await blob.arrayBuffer());
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return `data:${blob.type};base64,${btoa(binary)}`;
}

export async function dataUrlToBlob(dataUrl) {
  return (await fetch(dataUrl)).blob();
}

// Runs in the page (isolated world), so it must not use anything from this module's scope.
// Returns {ok, dataUrl} or {ok: false, rect, viewport} for the capture fallback.
async function readImageInPage(srcUrl, maxSide, quality) {
  const encode = async (source, width, height) => {
    const scale = Math.min(1, maxSide / Math.max(width, height));
    const w = Math.max(1, Math.round(width * scale));
    const h = Math.max(1, Math.round(height * scale));
    const canvas = new OffscreenCanvas(w, h);
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, w, h);
    ctx.imageSmoothingQuality = "high";
    ctx.drawImage(source, 0, 0, w, h);
    // Throws SecurityError when a cross-origin image tainted the canvas.
    const blob = await canvas.convertToBlob({ type: "image/jpeg", quality });
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(blob);
    });
  };
  const img = Array.from(document.images).find((i) => i.currentSrc === srcUrl || i.src === srcUrl);
  // 1. The decoded <img> itself: same-origin, CORS-enabled, data: and blob: images.
  if (img && img.complete && img.naturalWidth > 0) {
    try {
      return { ok: true, via: "element", dataUrl: await encode(img, img.naturalWidth, img.naturalHeight) };
    } catch {
      /* tainted: try the next way */
    }
  }
  // 2. Fetch from the page: same-origin with its cookies, data:, blob:, CORS-enabled hosts.
  try {
    const response = await fetch(srcUrl, { credentials: "include" });
    if (response.ok) {
      const bitmap = await createImageBitmap(await response.blob());
      return { ok: true, via: "fetch", dataUrl: await encode(bitmap, bitmap.width, bitmap.height) };
    }
  } catch {
    /* cross-origin without CORS: fall back to the pixels on screen */
  }
  // 3. Where the image is on screen, for tabs.captureVisibleTab.
  if (!img) return { ok: false, reason: "not-found" };
  img.scrollIntoView({ block: "center", inline: "center" });
  await new Promise((resolve) => {
    requestAnimationFrame(() => requestAnimationFrame(resolve));
    setTimeout(resolve, 150);
  });
  const r = img.getBoundingClientRect();
  const x = Math.max(0, r.left);
  const y = Math.max(0, r.top);
  const rect = {
    x,
    y,
    w: Math.min(window.innerWidth, r.right) - x,
    h: Math.min(window.innerHeight, r.bottom) - y,
  };
  if (rect.w < 4 || rect.h < 4) return { ok: false, reason: "off-screen" };
  return { ok: false, reason: "capture", rect, viewport: { w: window.innerWidth, h: window.innerHeight } };
}

const UNREADABLE =
  "Could not read this image. Try the toolbar button → “Select an area” and drag over it.";

/** The query JPEG for a right-clicked image: {blob, dataUrl, via}. */
export async function imageFromClick(info, tab) {
  if (info.srcUrl && info.srcUrl.startsWith("data:")) {
    // A data: URL carries its bytes: no page access needed.
    try {
      const bitmap = await createImageBitmap(await dataUrlToBlob(info.srcUrl));
      const blob = await toJpeg(bitmap);
      return { blob, dataUrl: await blobToDataUrl(blob), via: "data-url" };
    } catch {
      throw new ImageError(UNREADABLE);
    }
  }
  let result;
  try {
    const [injection] = await chrome.scripting.executeScript({
      target: { tabId: tab.id, frameIds: [info.frameId || 0] },
      func: readImageInPage,
      args: [info.srcUrl, MAX_SIDE, JPEG_QUALITY],
    });
    result = injection?.result;
  } catch (err) {
    console.warn("lookalike: cannot run in this page:", err?.message);
    throw new ImageError(UNREADABLE);
  }
  if (result?.ok) {
    return { blob: await dataUrlToBlob(result.dataUrl), dataUrl: result.dataUrl, via: result.via };
  }
  // The capture fallback only knows top-frame coordinates.
  if (result?.reason === "capture" && !info.frameId) {
    return imageFromRegion(tab, result.rect, result.viewport);
  }
  throw new ImageError(UNREADABLE);
}

/** The query JPEG for a rectangle (CSS pixels of the viewport) of the visible tab. */
export async function imageFromRegion(tab, rect, viewport) {
  let shot;
  try {
    shot = await chrome.tabs.captureVisibleTab(tab.windowId, { format: "jpeg", quality: 95 });
  } catch (err) {
    console.warn("lookalike: captureVisibleTab failed:", err?.message);
    throw new ImageError(
      "Could not capture this page. Click the toolbar button on the page again, then select an area.",
    );
  }
  const bitmap = await createImageBitmap(await dataUrlToBlob(shot));
  // The screenshot is in device pixels; the rectangle is in CSS pixels.
  const scale = bitmap.width / (viewport?.w || bitmap.width);
  const x = Math.max(0, Math.round(rect.x * scale));
  const y = Math.max(0, Math.round(rect.y * scale));
  const crop = {
    x,
    y,
    w: Math.min(bitmap.width - x, Math.round(rect.w * scale)),
    h: Math.min(bitmap.height - y, Math.round(rect.h * scale)),
  };
  if (crop.w < 4 || crop.h < 4) throw new ImageError("The selected area is too small. Drag a larger rectangle.");
  const blob = await toJpeg(bitmap, crop);
  return { blob, dataUrl: await blobToDataUrl(blob), via: "capture" };
}
