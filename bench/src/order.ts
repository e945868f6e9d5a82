/**
 * The request every scenario sends: a realistic order of about 1 KB of JSON, and what the handler answers
 * (201 with the created order, about the same size).
 */

const order = {
  customerId: "cus_4f9a7c2e81d04b6b",
  currency: "EUR",
  channel: "web",
  items: [
    { sku: "SKU-10482", name: "Merino wool sweater, navy, M", quantity: 1, unitPrice: "89.90" },
    { sku: "SKU-20931", name: "Organic cotton T-shirt, white, M", quantity: 3, unitPrice: "19.90" },
    { sku: "SKU-33017", name: "Leather belt, brown, 90 cm", quantity: 1, unitPrice: "45.00" },
    { sku: "SKU-41208", name: "Wool socks, grey, 41-43 (pack of 3)", quantity: 2, unitPrice: "14.50" },
    { sku: "SKU-55630", name: "Canvas tote bag, natural", quantity: 1, unitPrice: "24.00" },
  ],
  shippingAddress: {
    name: "Camille Martin",
    line1: "12 rue des Lilas",
    line2: "Bâtiment B, 3e étage",
    postalCode: "69003",
    city: "Lyon",
    country: "FR",
    phone: "+33 4 72 00 00 00",
  },
  billingAddress: {
    name: "Camille Martin",
    line1: "12 rue des Lilas",
    postalCode: "69003",
    city: "Lyon",
    country: "FR",
  },
  shippingMethod: "standard",
  couponCode: "WINTER10",
  notes: "Please leave the parcel with the caretaker if nobody answers.",
  metadata: { source: "checkout-v3", cartId: "cart_7b1e0d5a", abTest: "free-shipping-banner" },
};

/** The request body, serialised once: every request sends these exact bytes. */
export const ORDER_BODY = JSON.stringify(order);

/** The second body the wiring checks send under a used key (same shape, one quantity changed). */
export const OTHER_ORDER_BODY = JSON.stringify({
  ...order,
  items: order.items.map((item, index) => (index === 0 ? { ...item, quantity: 2 } : item)),
});

interface OrderItem {
  sku: string;
  name: string;
  quantity: number;
  unitPrice: string;
}

interface OrderInput {
  customerId: string;
  currency: string;
  items: OrderItem[];
  [field: string]: unknown;
}

/** What the handler does with a parsed order: price it and give it an id (the id is the side effect). */
export function createOrder(input: OrderInput, sequence: number): Record<string, unknown> {
  const cents = input.items.reduce(
    (sum, item) => sum + item.quantity * Math.round(Number.parseFloat(item.unitPrice) * 100),
    0,
  );
  return {
    id: `ord_${String(sequence).padStart(8, "0")}`,
    status: "created",
    total: (cents / 100).toFixed(2),
    ...input,
  };
}
